"""Index listing and management: list, describe, reload, create (empty or from a corpus), drop, snapshot."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from indexes.indexing.builder import build_index, create_empty_index
from indexes.indexing.live import snapshot_root
from indexes.kinds import KindError, parse_retrievers
from indexes.storage.docstore.corpus import CorpusError, resolve_corpus_file
from indexes.storage.docstore.layout import IndexNameError, IndexNotFoundError, validate_name
from retrieval.core.options import BuildOptions
from service.auth import require_admin, require_key
from service.errors import ERRORS, WRITE_ERRORS, ApiError, describe, public_message
from service.jobs import Job
from service.schemas import CreateIndexRequest, IndexInfo, IndexList, JobInfo, SnapshotInfo
from service.state import ServiceState, get_state

router = APIRouter(tags=["indexes"], dependencies=[Depends(require_key)])
admin = APIRouter(tags=["index management"], dependencies=[Depends(require_admin)])


@router.get("/v1/indexes", response_model=IndexList, responses=ERRORS)
async def list_indexes(state: ServiceState = Depends(get_state)) -> IndexList:
    return IndexList(indexes=[state.index_info(n, s) for n, s in sorted(state.registry.indexes.items())])


@router.get("/v1/indexes/{name}", response_model=IndexInfo, responses=ERRORS)
async def get_index(name: str, state: ServiceState = Depends(get_state)) -> IndexInfo:
    return state.index_info(name, state.index_for(name))


@router.post("/v1/indexes/{name}/reload", response_model=IndexInfo, dependencies=[Depends(require_admin)],
             responses=ERRORS)
async def reload_index(name: str, state: ServiceState = Depends(get_state)) -> IndexInfo:
    """Re-open an index from disk (after a rebuild); admin scope. Searches in flight finish on the old one."""
    registry = state.registry
    try:
        validate_name(name)
        await asyncio.get_running_loop().run_in_executor(registry.executor, registry.reload, name)
    except (IndexNameError, IndexNotFoundError):
        raise ApiError(404, f"no index named {name!r} on disk") from None
    except Exception as exc:  # a broken index on disk: report, keep serving the old copy
        raise ApiError(409, f"index {name!r} not reloaded: {public_message(exc)}") from None
    state.stats.observe_registry(registry)
    return state.index_info(name, state.index_for(name))


def _corpus_path(state: ServiceState, raw: str) -> Path:
    path = Path(raw).expanduser()
    if not path.is_absolute():
        raise ApiError(422, "corpus: give an absolute path on the server")
    resolved = path.resolve()
    roots = [r.expanduser().resolve() for r in state.settings.corpus_roots]
    if roots and not any(resolved.is_relative_to(r) for r in roots):
        raise ApiError(403, "corpus: this server reads corpora only from its HYBRID_CORPUS_ROOTS folders")
    try:
        return resolve_corpus_file(resolved)
    except CorpusError:
        raise ApiError(422, "corpus: no such corpus file or BEIR folder on the server") from None


@admin.post("/v1/indexes", status_code=201, response_model=None,
            responses={**WRITE_ERRORS, 201: {"model": IndexInfo, "description": "Empty index created"},
                       202: {"model": JobInfo, "description": "Build from the corpus started"}})
async def create_index(request: CreateIndexRequest, state: ServiceState = Depends(get_state)) -> JSONResponse:
    """Create an empty index (ready for upserts), or build one from a server-side corpus in a background job."""
    registry = state.registry
    try:
        validate_name(request.name)
        retrievers = parse_retrievers(request.retrievers)
    except (IndexNameError, KindError) as exc:
        raise ApiError(422, str(exc)) from None
    state.single_worker("creating an index")
    if request.name in registry.indexes or registry.root.path(request.name).exists():
        raise ApiError(409, f"index {request.name!r} already exists; DELETE it first or PUT documents into it")
    if registry.jobs.busy(request.name):
        raise ApiError(409, f"index {request.name!r} is already being built; GET /v1/jobs shows the job")
    overrides: dict[str, Any] = {"faiss_factory": request.faiss} if request.faiss else {}
    options = BuildOptions.from_settings(state.settings, retrievers=retrievers, progress=False,
                                         on_error=request.on_error, **overrides)
    if request.corpus is None:
        def create() -> None:
            create_empty_index(request.name, registry.root, options)
            registry.reload(request.name)

        await state.in_thread(create)
        state.stats.observe_registry(registry)
        return JSONResponse(state.index_info(request.name, state.index_for(request.name)).model_dump(), status_code=201)
    corpus = _corpus_path(state, request.corpus)

    def build(job: Job) -> dict[str, Any]:
        options.on_progress = job.progress
        manifest = build_index(corpus, request.name, registry.root, options)
        registry.reload(request.name)
        state.stats.observe_registry(registry)
        return {"documents": manifest.doc_count, "retrievers": list(manifest.retrievers),
                "skipped": {k: v["count"] for k, v in manifest.skipped.items()}}

    job = registry.jobs.submit("build", request.name, build, describe)
    return JSONResponse(state.job_info(job).model_dump(), status_code=202)


@admin.delete("/v1/indexes/{name}", status_code=204, response_class=Response, responses=WRITE_ERRORS)
async def delete_index(name: str, state: ServiceState = Depends(get_state)) -> Response:
    """Stop serving the index and delete its files (snapshots stay)."""
    registry = state.registry
    try:
        validate_name(name)
    except IndexNameError:
        raise ApiError(404, f"no index named {name!r}") from None
    state.single_worker("deleting an index")
    if name not in registry.indexes and name not in registry.failed and not registry.root.path(name).exists():
        raise ApiError(404, f"no index named {name!r}; GET /v1/indexes lists them")
    if registry.jobs.busy(name):
        raise ApiError(409, f"index {name!r} has a job running; wait for it (GET /v1/jobs)")

    def remove() -> None:
        registry.drop(name)
        with registry.root.lock(name):
            registry.root.delete(name)

    await state.in_thread(remove)
    return Response(status_code=204)


@admin.post("/v1/indexes/{name}/snapshot", response_model=SnapshotInfo, status_code=201, responses=WRITE_ERRORS)
async def snapshot_index(name: str, state: ServiceState = Depends(get_state)) -> SnapshotInfo:
    """Write a point-in-time copy of the index that `hybrid serve` can load (and restore from)."""
    live = state.writable(name)
    root = snapshot_root(state.settings.index_root)
    target = await state.in_thread(live.snapshot, root)
    rel = target.parent.relative_to(state.settings.index_root.expanduser())
    return SnapshotInfo(index=name, snapshot=target.parent.name, path=str(rel), seq=live.seq, documents=live.doc_count)
