"""The ``hybrid`` command line (``hybrid --help``); :mod:`service.cli.main` assembles it from one module per group."""

from service.cli.main import cli, main

__all__ = ["cli", "main"]
