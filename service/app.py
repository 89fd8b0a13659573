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
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from indexes.builder import BuildError, BuildOptions, build_index, create_empty_index
from indexes.corpus import CorpusError, Document, resolve_corpus_file
from indexes.faiss_backend import FaissBuildError
from indexes.layout import IndexBusyError, IndexNameError, IndexNotFoundError, validate_name
from indexes.live import IndexFailedError, LiveIndex, LiveWriteError, snapshot_root
from indexes.lucene_writer import LuceneWriteError
from indexes.manifest import ManifestError
from retrieval.fusion import FusionConfig, FusionError
from retrieval.models import ModelError
from retrieval.pipeline import SearchError, SearchResult, clean_query
from retrieval.settings import Settings
from service import metrics
from service.batcher import MicroBatcher
from service.jobs import Job
from service.registry import Registry, public_message
from service.schemas import (
    BatchSearchRequest,
    BatchSearchResponse,
    CreateIndexRequest,
    DeleteDocumentsRequest,
    ErrorResponse,
    Health,
    IndexInfo,
    IndexList,
    JobInfo,
    JobList,
    Ready,
    RetrieverInfo,
    SearchOptions,
    SearchRequest,
    SearchResponse,
    SnapshotInfo,
    UpsertRequest,
    WriteResponse,
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
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    409: {"model": ErrorResponse, "description": "Index busy (being built or written by another process), or "
                                                 "live writes with several worker processes"},
    503: {"model": ErrorResponse, "description": "Index failed to load, or refuses writes after a failed write"},
}
# Errors of index operations that are the request's fault, and the status each gets.
_WRITE_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (IndexNotFoundError, 404), (IndexBusyError, 409), (LuceneWriteError, 409), (IndexFailedError, 503),
    (LiveWriteError, 422), (CorpusError, 422), (BuildError, 422), (FaissBuildError, 422), (IndexNameError, 422),
    (ModelError, 422), (ManifestError, 409),
)


def _write_error(exc: BaseException) -> ApiError | None:
    for kind, status in _WRITE_STATUS:
        if isinstance(exc, kind):
            return ApiError(status, public_message(exc).split(": ", 1)[-1])
    return None


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

    def index_for(name: str) -> LiveIndex:
        live = registry.indexes.get(name)
        if live is None:
            if name in registry.failed:
                raise ApiError(503, f"index {name!r} failed to load: {registry.failed[name]}")
            raise ApiError(404, f"no index named {name!r}; GET /v1/indexes lists them")
        return live

    def index_info(name: str, live: LiveIndex) -> IndexInfo:
        m = live.manifest
        return IndexInfo(
            name=name, documents=m.doc_count, created=m.created, corpus_sha256=m.corpus_sha256, size_bytes=m.size_bytes,
            retrievers=[RetrieverInfo(name=r.name, model_id=r.model_id, parameters=r.parameters,
                                      size_bytes=r.size_bytes, build_seconds=r.build_seconds)
                        for r in m.retrievers.values()],
            seq=live.seq, updated=m.updated,
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
        live = index_for(name)
        check_queries(queries)
        fusion = FusionConfig(method=options.fusion.method, rrf_k=options.fusion.rrf_k,
                              weights=options.fusion.weights, normalization=options.fusion.normalization)

        def work(batch: list[str]) -> list[SearchResult]:
            with live.view() as searcher:  # one point in time for every retriever and the text lookup
                return searcher.batch_search(batch, k=options.k, retrievers=options.retrievers, fusion=fusion,
                                             depth=options.depth, explain=options.explain,
                                             include_text=options.include_text)

        try:
            if len(queries) == 1 and settings.micro_batch_max > 1:
                key = (name, id(live), options.model_dump_json(exclude={"query"}))
                results = [await batcher.submit(queries[0], key, work)]
            else:
                results = await asyncio.get_running_loop().run_in_executor(registry.executor, work, queries)
        except (SearchError, FusionError) as exc:
            raise ApiError(422, str(exc)) from None
        except IndexFailedError:
            raise ApiError(503, f"index {name!r} is being reloaded or removed; retry") from None
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
        body = Ready(ready=registry.ready, indexes=sorted(registry.indexes), failed=registry.failed)
        return JSONResponse(body.model_dump(), status_code=200 if registry.ready else 503)

    @app.get("/v1/indexes", response_model=IndexList, tags=["indexes"], dependencies=auth, responses=ERRORS)
    async def list_indexes() -> IndexList:
        return IndexList(indexes=[index_info(n, s) for n, s in sorted(registry.indexes.items())])

    @app.get("/v1/indexes/{name}", response_model=IndexInfo, tags=["indexes"], dependencies=auth, responses=ERRORS)
    async def get_index(name: str) -> IndexInfo:
        return index_info(name, index_for(name))

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
        return index_info(name, index_for(name))

    # --- live index management (admin scope) ------------------------------------------------------------

    admin = [Depends(require_admin)]

    def single_worker(action: str) -> None:
        if settings.workers > 1:
            raise ApiError(409, f"{action} needs one worker process (each worker holds its own copy of the indexes); "
                                "serve with --workers 1")

    def writable(name: str) -> LiveIndex:
        single_worker("writing to an index")
        return index_for(name)

    async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(registry.writer, fn, *args)
        except ApiError:
            raise
        except Exception as exc:
            error = _write_error(exc)
            if error is None:
                raise
            raise error from None

    def write_response(live: LiveIndex, result: Any, started: float) -> WriteResponse:
        return WriteResponse(seq=result.seq, upserted=result.upserted, deleted=result.deleted, missing=result.missing,
                             documents=live.doc_count, took_ms=(time.perf_counter() - started) * 1000.0,
                             encode_ms=result.encode_ms, apply_ms=result.apply_ms)

    def job_info(job: Job) -> JobInfo:
        return JobInfo(id=job.id, kind=job.kind, index=job.index, state=job.state, stage=job.stage, done=job.done,
                       total=job.total, docs_per_second=job.docs_per_second, errors=job.errors, result=job.result,
                       created=job.created, started=job.started, finished=job.finished)

    def describe(exc: BaseException) -> str:
        error = _write_error(exc)
        return error.message if error else public_message(exc)

    def check_corpus_path(raw: str) -> Path:
        path = Path(raw).expanduser()
        if not path.is_absolute():
            raise ApiError(422, "corpus: give an absolute path on the server")
        resolved = path.resolve()
        roots = [r.expanduser().resolve() for r in settings.corpus_roots]
        if roots and not any(resolved.is_relative_to(r) for r in roots):
            raise ApiError(403, "corpus: this server reads corpora only from its HYBRID_CORPUS_ROOTS folders")
        try:
            return resolve_corpus_file(resolved)
        except CorpusError:
            raise ApiError(422, "corpus: no such corpus file or BEIR folder on the server") from None

    @app.post("/v1/indexes", tags=["index management"], dependencies=admin, status_code=201, response_model=None,
              responses={**WRITE_ERRORS, 201: {"model": IndexInfo, "description": "Empty index created"},
                         202: {"model": JobInfo, "description": "Build from the corpus started"}})
    async def create_index(request: CreateIndexRequest) -> JSONResponse:
        """Create an empty index (ready for upserts), or build one from a server-side corpus in a background job."""
        try:
            validate_name(request.name)
        except IndexNameError as exc:
            raise ApiError(422, str(exc)) from None
        single_worker("creating an index")
        if request.name in registry.indexes or registry.root.path(request.name).exists():
            raise ApiError(409, f"index {request.name!r} already exists; DELETE it first or PUT documents into it")
        if registry.jobs.busy(request.name):
            raise ApiError(409, f"index {request.name!r} is already being built; GET /v1/jobs shows the job")
        options = BuildOptions(
            retrievers=tuple(request.retrievers), device=settings.resolved_device(), batch_size=settings.batch_size,
            sparse_model=settings.sparse_model, dense_model=settings.dense_model,
            faiss_factory=request.faiss or settings.faiss_factory, splade_scale=settings.splade_scale,
            splade_doc_top_k=settings.splade_doc_top_k, threads=settings.threads, progress=False,
            on_error=request.on_error,
        )
        if request.corpus is None:
            def create() -> None:
                create_empty_index(request.name, registry.root, options)
                registry.reload(request.name)

            await in_thread(create)
            stats.observe_registry(registry)
            return JSONResponse(index_info(request.name, index_for(request.name)).model_dump(), status_code=201)
        corpus = check_corpus_path(request.corpus)

        def build(job: Job) -> dict[str, Any]:
            options.on_progress = job.progress
            manifest = build_index(corpus, request.name, registry.root, options)
            registry.reload(request.name)
            stats.observe_registry(registry)
            return {"documents": manifest.doc_count, "retrievers": list(manifest.retrievers),
                    "skipped": {k: v["count"] for k, v in manifest.skipped.items()}}

        job = registry.jobs.submit("build", request.name, build, describe)
        return JSONResponse(job_info(job).model_dump(), status_code=202)

    @app.put("/v1/indexes/{name}/documents", tags=["index management"], dependencies=admin, response_model=None,
             responses={**WRITE_ERRORS, 200: {"model": WriteResponse, "description": "Written: durable and searchable"},
                        202: {"model": JobInfo, "description": "Accepted as a job (wait=false)"}})
    async def upsert_documents(name: str, request: UpsertRequest) -> JSONResponse:
        """Add or replace documents by `_id` in every retriever at once; searchable when this returns."""
        live = writable(name)
        if len(request.documents) > settings.max_write_docs:
            raise ApiError(413, f"{len(request.documents)} documents; the limit is {settings.max_write_docs} per request")
        docs = [Document(d.id, d.title, d.text, d.metadata) for d in request.documents]
        try:
            live.check_documents(docs)
        except LiveWriteError as exc:
            raise ApiError(422, str(exc)) from None
        started = time.perf_counter()
        if not request.wait:
            def work(job: Job) -> dict[str, Any]:
                job.progress("upsert", 0, len(docs))
                result = live.upsert(docs)
                job.progress("upsert", len(docs), len(docs))
                return write_response(live, result, started).model_dump()

            job = registry.jobs.submit("upsert", name, work, describe)
            return JSONResponse(job_info(job).model_dump(), status_code=202)
        result = await in_thread(live.upsert, docs)
        stats.observe_registry(registry)
        return JSONResponse(write_response(live, result, started).model_dump())

    @app.delete("/v1/indexes/{name}/documents", response_model=WriteResponse, tags=["index management"],
                dependencies=admin, responses=WRITE_ERRORS)
    async def delete_documents(name: str, request: DeleteDocumentsRequest) -> WriteResponse:
        """Remove documents by `_id` from every retriever at once; unknown ids are listed in `missing`."""
        live = writable(name)
        if len(request.ids) > settings.max_write_docs:
            raise ApiError(413, f"{len(request.ids)} ids; the limit is {settings.max_write_docs} per request")
        started = time.perf_counter()
        result = await in_thread(live.delete, request.ids)
        stats.observe_registry(registry)
        return write_response(live, result, started)

    @app.delete("/v1/indexes/{name}", tags=["index management"], dependencies=admin, status_code=204,
                response_class=Response, responses=WRITE_ERRORS)
    async def delete_index(name: str) -> Response:
        """Stop serving the index and delete its files (snapshots stay)."""
        try:
            validate_name(name)
        except IndexNameError:
            raise ApiError(404, f"no index named {name!r}") from None
        single_worker("deleting an index")
        if name not in registry.indexes and name not in registry.failed and not registry.root.path(name).exists():
            raise ApiError(404, f"no index named {name!r}; GET /v1/indexes lists them")
        if registry.jobs.busy(name):
            raise ApiError(409, f"index {name!r} has a job running; wait for it (GET /v1/jobs)")

        def remove() -> None:
            registry.drop(name)
            with registry.root.lock(name):
                registry.root.delete(name)

        await in_thread(remove)
        return Response(status_code=204)

    @app.post("/v1/indexes/{name}/snapshot", response_model=SnapshotInfo, tags=["index management"],
              dependencies=admin, status_code=201, responses=WRITE_ERRORS)
    async def snapshot_index(name: str) -> SnapshotInfo:
        """Write a point-in-time copy of the index that `hybrid serve` can load (and restore from)."""
        live = writable(name)
        root = snapshot_root(settings.index_root)
        target = await in_thread(live.snapshot, root)
        rel = target.parent.relative_to(settings.index_root.expanduser())
        return SnapshotInfo(index=name, snapshot=target.parent.name, path=str(rel), seq=live.seq, documents=live.doc_count)

    @app.get("/v1/jobs", response_model=JobList, tags=["index management"], dependencies=admin, responses=ERRORS)
    async def list_jobs() -> JobList:
        return JobList(jobs=[job_info(j) for j in registry.jobs.list()])

    @app.get("/v1/jobs/{job_id}", response_model=JobInfo, tags=["index management"], dependencies=admin,
             responses=ERRORS)
    async def get_job(job_id: str) -> JobInfo:
        """Progress of a long operation: stage, documents done of total, docs/s, errors, result."""
        job = registry.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id[:64]!r} (jobs are kept while the server runs)")
        return job_info(job)

    @app.get("/metrics", tags=["status"], dependencies=auth, include_in_schema=False)
    async def prometheus() -> Response:
        return Response(stats.render(), media_type=metrics.CONTENT_TYPE)

    return app
