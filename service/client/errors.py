"""What the clients raise: one class per kind of answer, all :class:`~retrieval.core.errors.HybridError`, so a
program can catch the service's errors the way the library's are caught."""

from __future__ import annotations

from retrieval.core.errors import HybridError


class ClientError(HybridError):
    """The server answered with an error; ``status`` and ``message`` are its ``{"error": {"code", "message"}}``."""

    http_status = 400

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.retry_after = retry_after  # seconds the server asked to wait (429/503), if it said


class ApiKeyError(ClientError):
    """401 (no key) or 403 (a key without the scope, or not accepted)."""

    http_status = 401


class NotFoundError(ClientError):
    http_status = 404


class ConflictError(ClientError):
    """409: the index exists, is busy or could not be loaded."""

    http_status = 409


class InvalidRequestError(ClientError):
    """422 or 413 (or another 4xx): the request, as the server's message says; checked before sending where the
    shared request models can check it."""

    http_status = 422


class OverloadedError(ClientError):
    """429 or 503 after the retries ran out (or a Retry-After longer than the client waits)."""

    http_status = 503


class ServerError(ClientError):
    http_status = 500


class ConnectionFailedError(ClientError):
    """No answer: the server could not be reached (status 0)."""

    http_status = 503


class RequestTimeoutError(ClientError, TimeoutError):
    """The client's timeout passed before the server answered (status 0)."""

    http_status = 504


class VersionMismatchWarning(UserWarning):
    """The server runs another version (major.minor) than the client's."""


def error_for(status: int, message: str, retry_after: float | None = None) -> ClientError:
    if status in (401, 403):
        return ApiKeyError(status, message)
    if status == 404:
        return NotFoundError(status, message)
    if status == 409:
        return ConflictError(status, message)
    if status in (429, 503):
        return OverloadedError(status, message, retry_after)
    if 400 <= status < 500:
        return InvalidRequestError(status, message)
    return ServerError(status, message)
