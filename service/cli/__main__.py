"""``python -m service.cli``: the same command line as ``hybrid``."""

from service.cli.main import main

main()
