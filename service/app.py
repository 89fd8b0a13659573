"""FastAPI application factory: ``create_app(settings)``.

Routes live under ``/v1``, one router per concern (:mod:`service.routers`); errors are
``{"error": {"code", "message"}}`` (:mod:`service.errors`), keys and scopes are in :mod:`service.auth`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from retrieval.core.disk import NO_SPACE, is_disk_full
from retrieval.core.settings import Settings
from service import metrics
from service.admission import Admission, watch_for_drain
from service.batcher import MicroBatcher
from service.errors import error_response, install_handlers
from service.registry import Registry
from service.routers import evaluation, indexes, jobs, search, status, writes
from service.state import ServiceState
from service.version import VERSION

log = logging.getLogger("hybrid.service")
MAX_BODY_BYTES = 16 * 2**20  # the default of the max_body_bytes setting


class LimitsAndMetrics:
    """Body-size limit, request metrics and the last line of defence against unhandled errors.

    A plain ASGI middleware: Starlette's ``@app.middleware("http")`` runs every response through an extra
    task and stream, which cost a large share of the serving overhead of a millisecond-scale search.
    """

    def __init__(self, app: ASGIApp, stats: metrics.Metrics, max_body: int = MAX_BODY_BYTES,
                 admission: Admission | None = None) -> None:
        self.app = app
        self.stats = stats
        self.max_body = max_body
        self.admission = admission  # searches refused here when it is full, before their body is read

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False

        async def watched(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                # Time in the application, request parsed to response ready: with the search's own took_ms,
                # it splits a client's latency into search, service and transport (eval/bench/http_latency.py).
                app_ms = (time.perf_counter() - started) * 1000.0
                message["headers"] = [*message.get("headers", []), (b"server-timing", b"app;dur=%.3f" % app_ms)]
            await send(message)

        if (self.admission is not None and scope["method"] == "POST" and self.admission.full()
                and scope["path"].endswith(("/search", "/search/batch"))):
            refused = self.admission.refusal()
            await error_response(refused.status, refused.message, refused.headers)(scope, receive, watched)
            self.stats.observe_request("/v1/indexes/{name}/search", scope["method"], status,
                                       time.perf_counter() - started)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is None and scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            receive = await self._buffered(receive)  # a chunked body: counted as it comes, up to the limit
        if receive is None or (length is not None and (not length.isdigit() or int(length) > self.max_body)):
            await error_response(413, f"request body larger than {self.max_body} bytes (max_body_bytes)")(
                scope, _no_body, watched)
        else:
            try:
                await self.app(scope, receive, watched)
            except Exception as exc:  # answer without internals, unless an answer is already on its way
                log.exception("unhandled error on %s", scope.get("path"))
                if not response_started:
                    full = is_disk_full(exc)  # wherever it surfaced: 507, never a bare 500
                    message = f"{NO_SPACE}; free space and retry" if full else \
                        "internal error; the server log has the details"
                    await error_response(507 if full else 500, message)(scope, receive, watched)
        route = scope.get("route")
        self.stats.observe_request(getattr(route, "path", "unmatched"), scope["method"], status,
                                   time.perf_counter() - started)

    async def _buffered(self, receive: Receive) -> Receive | None:
        """The whole body read ahead (None once it passes the limit), replayed to the app message by message."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_body:
                return None
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        return replay


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def create_app(settings: Settings | None = None, registry: Registry | None = None) -> FastAPI:
    settings = settings or Settings()
    registry = registry or Registry(settings)
    stats = metrics.Metrics()
    batcher = MicroBatcher(registry.executor, wait_ms=settings.micro_batch_wait_ms, max_batch=settings.micro_batch_max)
    stats.watch_batcher(batcher)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        watch_for_drain()
        await loop.run_in_executor(registry.executor, registry.load_all)
        stats.observe_registry(registry)
        batcher.start()
        yield
        await batcher.stop()
        registry.close()

    app = FastAPI(
        title="hybrid-retrieval",
        version=VERSION,
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

    app.add_middleware(LimitsAndMetrics, stats=stats, max_body=settings.max_body_bytes,
                       admission=app.state.service.admission)
    install_handlers(app)
    for router in (status.router, indexes.router, search.router, indexes.admin, writes.router, jobs.router,
                   evaluation.router):
        app.include_router(router)
    if settings.workbench:
        from service.ui import mount_workbench

        mount_workbench(app)
    return app
