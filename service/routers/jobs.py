"""Progress of long index operations (builds, asynchronous upserts)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.auth import require_admin
from service.errors import ERRORS, ApiError
from service.schemas import JobInfo, JobList
from service.state import ServiceState, get_state

router = APIRouter(tags=["index management"], dependencies=[Depends(require_admin)])


@router.get("/v1/jobs", response_model=JobList, responses=ERRORS)
async def list_jobs(state: ServiceState = Depends(get_state)) -> JobList:
    return JobList(jobs=[state.job_info(j) for j in state.registry.jobs.list()])


@router.get("/v1/jobs/{job_id}", response_model=JobInfo, responses=ERRORS)
async def get_job(job_id: str, state: ServiceState = Depends(get_state)) -> JobInfo:
    """Progress of a long operation: stage, documents done of total, docs/s, errors, result."""
    job = state.registry.jobs.get(job_id)
    if job is None:
        raise ApiError(404, f"no job {job_id[:64]!r} (jobs are kept while the server runs)")
    return state.job_info(job)
