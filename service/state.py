"""What every router shares: the settings, the open indexes, metrics, the micro-batcher, and the
helpers that turn them into responses. One object per app, on ``app.state.service``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from indexes.indexing.live import WriteResult
from indexes.indexing.sharded import ServedIndex
from retrieval.core.errors import HybridError
from retrieval.core.settings import Settings
from service import metrics
from service.admission import Admission
from service.batcher import MicroBatcher
from service.errors import ApiError, api_error
from service.jobs import Job
from service.keys import KeyRing
from service.registry import Registry
from service.schemas import IndexInfo, JobInfo, RetrieverInfo, WriteResponse


@dataclass
class ServiceState:
    settings: Settings
    registry: Registry
    stats: metrics.Metrics
    batcher: MicroBatcher
    admission: Admission = field(init=False)  # searches (service/admission.py)
    write_admission: Admission = field(init=False)  # upserts and deletes
    keys: KeyRing = field(init=False)  # API keys (service/keys.py)

    def __post_init__(self) -> None:
        self.admission = Admission(self.settings.max_concurrent, self.settings.max_queued)
        self.write_admission = Admission(self.registry.writer._max_workers, self.settings.max_queued_writes, "write")
        self.keys = KeyRing(self.settings)

    def index_for(self, name: str) -> ServedIndex:
        live = self.registry.indexes.get(name)
        if live is None:
            if name in self.registry.failed:
                raise ApiError(503, f"index {name!r} failed to load: {self.registry.failed[name]}")
            raise ApiError(404, f"no index named {name!r}; GET /v1/indexes lists them")
        return live

    def index_info(self, name: str, live: ServedIndex) -> IndexInfo:
        from indexes.kinds import get_kind

        m = live.manifest
        return IndexInfo(
            name=name, documents=m.doc_count, created=m.created, corpus_sha256=m.corpus_sha256, size_bytes=m.size_bytes,
            retrievers=[RetrieverInfo(name=r.name, kind=r.kind, model_id=r.model_id, parameters=r.parameters,
                                      size_bytes=r.size_bytes, build_seconds=r.build_seconds,
                                      description=get_kind(r.kind).describe(r), search_tuning=r.search_tuning)
                        for r in m.retrievers.values()],
            seq=live.seq, updated=m.updated, fields=m.fields,
        )

    def single_worker(self, action: str) -> None:
        if self.settings.workers > 1:
            raise ApiError(409, f"{action} needs one worker process (each worker holds its own copy of the indexes); "
                                "serve with --workers 1")

    def writable(self, name: str) -> ServedIndex:
        self.single_worker("writing to an index")
        return self.index_for(name)

    async def in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run an index operation on the write pool; user errors become their HTTP status."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.registry.writer, fn, *args)
        except HybridError as exc:
            raise api_error(exc) from None

    @staticmethod
    def write_response(live: ServedIndex, result: WriteResult, started: float) -> WriteResponse:
        return WriteResponse(seq=result.seq, upserted=result.upserted, deleted=result.deleted, missing=result.missing,
                             documents=live.doc_count, took_ms=(time.perf_counter() - started) * 1000.0,
                             encode_ms=result.encode_ms, apply_ms=result.apply_ms)

    @staticmethod
    def job_info(job: Job) -> JobInfo:
        return JobInfo(id=job.id, kind=job.kind, index=job.index, state=job.state, stage=job.stage, done=job.done,
                       total=job.total, docs_per_second=job.docs_per_second, errors=job.errors, result=job.result,
                       created=job.created, started=job.started, finished=job.finished)


def state_of(request: Request) -> ServiceState:
    return request.app.state.service  # type: ignore[no-any-return]


async def get_state(request: Request) -> ServiceState:
    """FastAPI dependency: the app's shared state (async: FastAPI runs a plain ``def`` dependency on a worker
    thread, a hop that cost about 0.2 ms a request)."""
    return state_of(request)
