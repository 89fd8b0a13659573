"""FastAPI application factory: ``create_app(settings)``.

Routes live under ``/v1``; errors are ``{"error": {"code", "message"}}`` with a message that says
what to fix, and never carry a traceback or a file path.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from retrieval.fusion import FusionConfig, FusionError
from retrieval.pipeline import SearchError, SearchResult, Searcher, clean_query
from retrieval.settings import Settings
from service import metrics
from service.batcher import MicroBatcher
from indexes.layout import IndexNameError, IndexNotFoundError, validate_name
from service.registry import Registry, public_message
from service.schemas import (
    BatchSearchRequest,
    BatchSearchResponse,
    ErrorResponse,
    Health,
    IndexInfo,
    IndexList,
    Ready,
    RetrieverInfo,
    SearchOptions,
    SearchRequest,
    SearchResponse,
)

log = logging.getLogger("hybrid.service")
MAX_BODY_BYTES = 16 * 2**20


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": status, "message": message}}, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing API key"},
    403: {"model": ErrorResponse, "description": "Wrong API key"},
    404: {"model": ErrorResponse, "description": "Unknown index"},
    409: {"model": ErrorResponse, "description": "Index on disk could not be loaded"},
    413: {"model": ErrorResponse, "description": "Query, batch or body too large"},
    422: {"model": ErrorResponse, "description": "Invalid request"},
}


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

    auth_on = bool(settings.api_keys or settings.admin_keys)

    def _matches(token: str, keys: list[str]) -> bool:
        # Compare against every key, always: constant time in the token and in which key matched.
        found = False
        for key in keys:
            found |= hmac.compare_digest(token.encode(), key.encode())
        return found

    def _token(request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'")
        return token

    async def require_key(request: Request) -> None:
        """Search scope: a search key or an admin key."""
        if auth_on and not _matches(_token(request), settings.api_keys + settings.admin_keys):
            raise ApiError(403, "API key not accepted")

    async def require_admin(request: Request) -> None:
        """Admin scope: anything that changes or reloads an index."""
        if not auth_on:
            return
        token = _token(request)
        if _matches(token, settings.admin_keys):
            return
        raise ApiError(403, "this operation needs an admin key" if _matches(token, settings.api_keys)
                       else "API key not accepted")

    @app.middleware("http")
    async def limits_and_metrics(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            response: Response = _error(413, f"request body larger than {MAX_BODY_BYTES} bytes")
        else:
            try:
                response = await call_next(request)
            except Exception:  # last line of defence: log it, answer without internals
                log.exception("unhandled error on %s", request.url.path)
                response = _error(500, "internal error; the server log has the details")
        route = request.scope.get("route")
        stats.observe_request(getattr(route, "path", "unmatched"), request.method, response.status_code,
                              time.perf_counter() - started)
        return response

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404 and exc.detail == "Not Found":
            return _error(404, f"no route {request.method} {request.url.path[:200]}; /docs lists the routes")
        if exc.status_code == 405:
            return _error(405, f"method {request.method} not allowed on {request.url.path[:200]}; /docs lists the routes")
        return _error(exc.status_code, str(exc.detail))

    def searcher_for(name: str) -> Searcher:
        searcher = registry.searchers.get(name)
        if searcher is None:
            if name in registry.failed:
                raise ApiError(503, f"index {name!r} failed to load: {registry.failed[name]}")
            raise ApiError(404, f"no index named {name!r}; GET /v1/indexes lists them")
        return searcher

    def index_info(name: str, searcher: Searcher) -> IndexInfo:
        m = searcher.manifest
        return IndexInfo(
            name=name, documents=m.doc_count, created=m.created, corpus_sha256=m.corpus_sha256, size_bytes=m.size_bytes,
            retrievers=[RetrieverInfo(name=r.name, model_id=r.model_id, parameters=r.parameters,
                                      size_bytes=r.size_bytes, build_seconds=r.build_seconds)
                        for r in m.retrievers.values()],
        )

    def check_queries(queries: list[str]) -> None:
        if len(queries) > settings.max_batch_queries:
            raise ApiError(413, f"batch of {len(queries)} queries; the limit is {settings.max_batch_queries}")
        for i, q in enumerate(queries):
            if len(q) > settings.max_query_chars:
                raise ApiError(413, f"query {i} has {len(q)} characters; the limit is {settings.max_query_chars}")
            if not clean_query(q).strip():
                raise ApiError(422, f"query {i} is empty or whitespace; send some text to search for")

    async def run_search(name: str, queries: list[str], options: SearchOptions) -> list[SearchResult]:
        searcher = searcher_for(name)
        check_queries(queries)
        fusion = FusionConfig(method=options.fusion.method, rrf_k=options.fusion.rrf_k,
                              weights=options.fusion.weights, normalization=options.fusion.normalization)

        def work(batch: list[str]) -> list[SearchResult]:
            return searcher.batch_search(batch, k=options.k, retrievers=options.retrievers, fusion=fusion,
                                         depth=options.depth, explain=options.explain,
                                         include_text=options.include_text)

        try:
            if len(queries) == 1 and settings.micro_batch_max > 1:
                key = (name, options.model_dump_json(exclude={"query"}))
                results = [await batcher.submit(queries[0], key, work)]
            else:
                results = await asyncio.get_running_loop().run_in_executor(registry.executor, work, queries)
        except (SearchError, FusionError) as exc:
            raise ApiError(422, str(exc)) from None
        for result in results:
            stats.observe_search(name, result)
        return results

    def to_response(result: SearchResult) -> SearchResponse:
        return SearchResponse.model_validate(
            {"hits": [asdict(h) for h in result.hits], "took_ms": result.took_ms, "retrievers": result.retrievers,
             "timings_ms": result.timings_ms}
        )

    auth = [Depends(require_key)]

    @app.get("/v1/health", response_model=Health, tags=["status"])
    async def health() -> Health:
        """The process is up (no auth)."""
        return Health()

    @app.get("/v1/ready", response_model=Ready, tags=["status"], dependencies=auth, responses=ERRORS)
    async def ready() -> JSONResponse:
        """Indexes are loaded and warmed; 503 until then."""
        body = Ready(ready=registry.ready, indexes=sorted(registry.searchers), failed=registry.failed)
        return JSONResponse(body.model_dump(), status_code=200 if registry.ready else 503)

    @app.get("/v1/indexes", response_model=IndexList, tags=["indexes"], dependencies=auth, responses=ERRORS)
    async def list_indexes() -> IndexList:
        return IndexList(indexes=[index_info(n, s) for n, s in sorted(registry.searchers.items())])

    @app.get("/v1/indexes/{name}", response_model=IndexInfo, tags=["indexes"], dependencies=auth, responses=ERRORS)
    async def get_index(name: str) -> IndexInfo:
        return index_info(name, searcher_for(name))

    @app.post("/v1/indexes/{name}/search", response_model=SearchResponse, response_model_exclude_none=True,
              tags=["search"], dependencies=auth, responses=ERRORS)
    async def search(name: str, request: SearchRequest) -> SearchResponse:
        """Search one index with any subset of its retrievers, fused."""
        results = await run_search(name, [request.query], request)
        return to_response(results[0])

    @app.post("/v1/indexes/{name}/search/batch", response_model=BatchSearchResponse, response_model_exclude_none=True,
              tags=["search"], dependencies=auth, responses=ERRORS)
    async def batch_search(name: str, request: BatchSearchRequest) -> BatchSearchResponse:
        """Many queries in one request, encoded in batches."""
        started = time.perf_counter()
        results = await run_search(name, request.queries, request)
        return BatchSearchResponse(results=[to_response(r) for r in results],
                                   took_ms=(time.perf_counter() - started) * 1000.0)

    @app.post("/v1/indexes/{name}/reload", response_model=IndexInfo, tags=["indexes"],
              dependencies=[Depends(require_admin)], responses=ERRORS)
    async def reload_index(name: str) -> IndexInfo:
        """Re-open an index from disk (after a rebuild); admin scope. Searches in flight finish on the old one."""
        try:
            validate_name(name)
            await asyncio.get_running_loop().run_in_executor(registry.executor, registry.reload, name)
        except (IndexNameError, IndexNotFoundError):
            raise ApiError(404, f"no index named {name!r} on disk") from None
        except Exception as exc:  # a broken index on disk: report, keep serving the old copy
            raise ApiError(409, f"index {name!r} not reloaded: {public_message(exc)}") from None
        stats.observe_registry(registry)
        return index_info(name, searcher_for(name))

    @app.get("/metrics", tags=["status"], dependencies=auth, include_in_schema=False)
    async def prometheus() -> Response:
        return Response(stats.render(), media_type=metrics.CONTENT_TYPE)

    return app
