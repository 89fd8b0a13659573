"""How errors leave the API: ``{"error": {"code", "message"}}``, never a traceback or a file path.

Every user error of the program is a :class:`~retrieval.core.errors.HybridError`, which carries its
HTTP status; :func:`api_error` is the one mapping from it to a response, used by every router.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from retrieval.core.disk import disk_full, is_disk_full
from retrieval.core.errors import HybridError
from retrieval.search.request import validation_message
from service.schemas import ErrorResponse

log = logging.getLogger("hybrid.service")
_PATH = re.compile(r"(?<![\w.-])(?:/[^\s'\":]+)+")


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def public_message(exc: BaseException) -> str:
    """An error message fit for clients: absolute file paths replaced, type kept."""
    return f"{type(exc).__name__}: {_PATH.sub('<path>', str(exc))}"


def api_error(exc: HybridError) -> ApiError:
    """The response a user error gets: its class's status, its message without file paths."""
    return ApiError(exc.http_status, public_message(exc).split(": ", 1)[-1])


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": status, "message": message}}, status_code=status, headers=headers)


def describe(exc: BaseException) -> str:
    """A job's error line: a user error's message, or the type and message of anything else."""
    if not isinstance(exc, HybridError) and is_disk_full(exc):
        exc = disk_full(exc, "running the job", "nothing of it was published")
    return api_error(exc).message if isinstance(exc, HybridError) else public_message(exc)


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing API key"},
    403: {"model": ErrorResponse, "description": "Wrong API key"},
    404: {"model": ErrorResponse, "description": "Unknown index"},
    409: {"model": ErrorResponse, "description": "Index on disk could not be loaded"},
    413: {"model": ErrorResponse, "description": "Query, batch or body too large"},
    422: {"model": ErrorResponse, "description": "Invalid request"},
}
SEARCH_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    429: {"model": ErrorResponse, "description": "The server is at its limit (max_concurrent running, max_queued "
                                                 "waiting): retry after the Retry-After header's seconds"},
    503: {"model": ErrorResponse, "description": "Index not loaded, or the server is shutting down (Retry-After)"},
    504: {"model": ErrorResponse, "description": "timeout_ms passed before any retriever was searched"},
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    409: {"model": ErrorResponse, "description": "Index busy (being built or written by another process), or "
                                                 "live writes with several worker processes"},
    429: {"model": ErrorResponse, "description": "Too many writes waiting (max_queued_writes): nothing was written; "
                                                 "retry after the Retry-After header's seconds"},
    503: {"model": ErrorResponse, "description": "Index failed to load, or refuses writes after a failed write"},
    507: {"model": ErrorResponse, "description": "The disk is full: nothing of this write was acknowledged"},
}


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def on_api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(HybridError)
    async def on_user_error(_: Request, exc: HybridError) -> JSONResponse:
        error = api_error(exc)
        return error_response(error.status, error.message)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, validation_message(exc))  # type: ignore[arg-type]

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404 and exc.detail == "Not Found":
            return error_response(404, f"no route {request.method} {request.url.path[:200]}; /docs lists the routes")
        if exc.status_code == 405:
            return error_response(405, f"method {request.method} not allowed on {request.url.path[:200]}; "
                                       "/docs lists the routes")
        return error_response(exc.status_code, str(exc.detail))
