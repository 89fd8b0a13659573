"""One base class for every error that is the caller's to fix, not a bug.

Each subclass says once how the two faces report it: ``http_status`` for the REST API and
``exit_code`` for the CLI. Both map errors through this class alone, so a new error type needs no
edits in either face, and the two can never disagree about what is a user error.
"""

from __future__ import annotations


class HybridError(Exception):
    """A request, input or environment the program cannot work with; the message says what to fix."""

    http_status: int = 422
    exit_code: int = 2


class NotFoundError(HybridError):
    http_status = 404


class ConflictError(HybridError):
    http_status = 409


class UnavailableError(HybridError):
    http_status = 503
