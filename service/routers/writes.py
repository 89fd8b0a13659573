"""Live writes: upsert and delete documents by ``_id``, in every retriever of an index at once."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from indexes.indexing.live import LiveWriteError
from indexes.storage.docstore.corpus import Document
from service.auth import require_admin
from service.errors import WRITE_ERRORS, ApiError, describe
from service.jobs import Job
from service.schemas import DeleteDocumentsRequest, JobInfo, UpsertRequest, WriteResponse
from service.state import ServiceState, get_state

router = APIRouter(tags=["index management"], dependencies=[Depends(require_admin)])


@router.put("/v1/indexes/{name}/documents", response_model=None,
            responses={**WRITE_ERRORS, 200: {"model": WriteResponse, "description": "Written: durable and searchable"},
                       202: {"model": JobInfo, "description": "Accepted as a job (wait=false)"}})
async def upsert_documents(name: str, request: UpsertRequest, state: ServiceState = Depends(get_state)) -> JSONResponse:
    """Add or replace documents by `_id` in every retriever at once; searchable when this returns."""
    live = state.writable(name)
    limit = state.settings.max_write_docs
    if len(request.documents) > limit:
        raise ApiError(413, f"{len(request.documents)} documents; the limit is {limit} per request")
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
            return state.write_response(live, result, started).model_dump()

        job = state.registry.jobs.submit("upsert", name, work, describe)
        return JSONResponse(state.job_info(job).model_dump(), status_code=202)
    async with state.write_admission.slot(), state.admission.slot(priority=True):  # it encodes on the same cores
        result = await state.in_thread(live.upsert, docs)
    state.stats.observe_registry(state.registry)
    return JSONResponse(state.write_response(live, result, started).model_dump())


@router.delete("/v1/indexes/{name}/documents", response_model=WriteResponse, responses=WRITE_ERRORS)
async def delete_documents(name: str, request: DeleteDocumentsRequest,
                           state: ServiceState = Depends(get_state)) -> WriteResponse:
    """Remove documents by `_id` from every retriever at once; unknown ids are listed in `missing`."""
    live = state.writable(name)
    limit = state.settings.max_write_docs
    if len(request.ids) > limit:
        raise ApiError(413, f"{len(request.ids)} ids; the limit is {limit} per request")
    started = time.perf_counter()
    async with state.write_admission.slot(), state.admission.slot(priority=True):
        result = await state.in_thread(live.delete, request.ids)
    state.stats.observe_registry(state.registry)
    return state.write_response(live, result, started)
