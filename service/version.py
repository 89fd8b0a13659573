"""The package's version, which the server reports (``GET /v1/health``, the OpenAPI ``info.version``) and the Python
client compares with its own at connect. Standard library only: the client imports it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

PACKAGE = "hybrid-retrieval"


def package_version() -> str:
    try:
        return version(PACKAGE)
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"


VERSION = package_version()
