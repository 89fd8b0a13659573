"""Background jobs for long index operations (builds from a corpus, large upserts), with progress.

Jobs run one at a time on their own thread, so a build never takes the search pool's threads and two
builds never compete for the two cores. Finished jobs are kept (the newest ``keep``) for ``GET /v1/jobs``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger("hybrid.jobs")
State = Literal["queued", "running", "succeeded", "failed"]


@dataclass
class Job:
    id: str
    kind: str
    index: str
    state: State = "queued"
    stage: str = ""
    done: int = 0
    total: int | None = None
    errors: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None

    def progress(self, stage: str, done: int, total: int | None) -> None:
        self.stage, self.done, self.total = stage, done, total

    @property
    def docs_per_second(self) -> float | None:
        if self.started is None or not self.done:
            return None
        elapsed = (self.finished or time.time()) - self.started
        return self.done / elapsed if elapsed > 0 else None


class JobManager:
    def __init__(self, keep: int = 1000) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._keep = keep
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job")

    def submit(self, kind: str, index: str, work: Callable[[Job], dict[str, Any]],
               describe_error: Callable[[BaseException], str]) -> Job:
        """Queue ``work(job)``; its return value becomes the job's result, an exception its error."""
        job = Job(id=uuid.uuid4().hex, kind=kind, index=index)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self._keep:
                self._jobs.popitem(last=False)

        def run() -> None:
            job.state, job.started = "running", time.time()
            try:
                job.result = work(job)
                job.state = "succeeded"
            except Exception as exc:  # reported through the job, never lost
                log.error("job %s (%s of %s) failed: %s", job.id, kind, index, exc)
                job.errors.append(describe_error(exc))
                job.state = "failed"
            finally:
                job.finished = time.time()

        self._executor.submit(run)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def list(self) -> list[Job]:
        with self._lock:
            return list(reversed(self._jobs.values()))

    def busy(self, index: str) -> bool:
        with self._lock:
            return any(j.index == index and j.state in ("queued", "running") for j in self._jobs.values())

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
