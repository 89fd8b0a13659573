"""FastAPI application factory: ``create_app(settings)``.

Routes live under ``/v1``, one router per concern (:mod:`service.routers`); errors are
``{"error": {"code", "message"}}`` (:mod:`service.errors`), keys and scopes are in :mod:`service.auth`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response

from retrieval.core.settings import Settings
from service import metrics
from service.batcher import MicroBatcher
from service.errors import error_response, install_handlers
from service.registry import Registry
from service.routers import indexes, jobs, search, status, writes
from service.state import ServiceState

log = logging.getLogger("hybrid.service")
MAX_BODY_BYTES = 16 * 2**20


def create_app(settings: Settings | None = None, registry: Registry | None = None) -> FastAPI:
    settings = settings or Settings()
    registry = registry or Registry(settings)
    stats = metrics.Metrics()
    batcher = MicroBatcher(registry.executor, wait_ms=settings.micro_batch_wait_ms, max_batch=settings.micro_batch_max)
    stats.watch_batcher(batcher)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(registry.executor, registry.load_all)
        stats.observe_registry(registry)
        batcher.start()
        yield
        await batcher.stop()
        registry.close()

    app = FastAPI(
        title="hybrid-retrieval",
        version="0.1.0",
        description="Hybrid sparse (SPLADE, BM25 on Lucene) and dense (FAISS) retrieval with rank fusion.",
        lifespan=lifespan,
    )
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.state.registry = registry
    app.state.settings = settings
    app.state.service = ServiceState(settings, registry, stats, batcher)

    @app.middleware("http")
    async def limits_and_metrics(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            response: Response = error_response(413, f"request body larger than {MAX_BODY_BYTES} bytes")
        else:
            try:
                response = await call_next(request)
            except Exception:  # last line of defence: log it, answer without internals
                log.exception("unhandled error on %s", request.url.path)
                response = error_response(500, "internal error; the server log has the details")
        route = request.scope.get("route")
        stats.observe_request(getattr(route, "path", "unmatched"), request.method, response.status_code,
                              time.perf_counter() - started)
        return response

    install_handlers(app)
    for router in (status.router, indexes.router, search.router, indexes.admin, writes.router, jobs.router):
        app.include_router(router)
    return app
