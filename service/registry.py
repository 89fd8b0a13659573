"""The indexes a server process holds open, loaded once at start-up and warmed with one query.

Each worker process loads its own copy (JVM, encoders, FAISS indexes): nothing is shared between
uvicorn workers except the files on disk, which is why live writes need a single worker. Inside a
process, searches run on a fixed thread pool, so the JVM sees a bounded set of attached threads and
the event loop never blocks on encoding; long index operations run as jobs (:mod:`service.jobs`).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from indexes.indexing.sharded import ServedIndex, open_index
from indexes.storage.docstore.layout import IndexRoot
from retrieval.core.options import OpenOptions
from retrieval.core.settings import Settings
from service.errors import public_message
from service.jobs import JobManager

log = logging.getLogger("hybrid.service")


@dataclass
class Registry:
    settings: Settings
    indexes: dict[str, ServedIndex] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    load_seconds: dict[str, float] = field(default_factory=dict)
    ready: bool = False
    executor: ThreadPoolExecutor = field(init=False)
    writer: ThreadPoolExecutor = field(init=False)
    jobs: JobManager = field(init=False)
    options: OpenOptions = field(init=False)

    def __post_init__(self) -> None:
        self.options = OpenOptions.from_settings(self.settings)
        self.executor = ThreadPoolExecutor(max_workers=max(2, self.settings.threads * 2), thread_name_prefix="search")
        # Writes encode for seconds: their own threads keep the search pool free for searches.
        self.writer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="write")
        self.jobs = JobManager()

    @property
    def root(self) -> IndexRoot:
        return IndexRoot(self.settings.index_root)

    def load_all(self) -> None:
        for name in self.root.names():
            try:
                self.reload(name)
            except Exception as exc:  # one broken index must not take the others down
                log.error("index %s not loaded: %s", name, exc)
                self.failed[name] = public_message(exc)
        self.ready = True

    def _open(self, name: str) -> ServedIndex:
        live = open_index(self.root.resolve(name), self.options, root=self.root)
        with live.view() as searcher:
            searcher.search("warm up", k=1)
        return live

    def reload(self, name: str) -> None:
        """Open ``name`` afresh and swap it in; searches in flight finish on the old copy."""
        started = time.perf_counter()
        old = self.indexes.get(name)
        if old is not None:
            old.stop_writes()  # checkpointed: the new copy sees every acknowledged write without replaying
        live = self._open(name)
        self.indexes[name] = live  # one dict store: atomic for readers
        self.failed.pop(name, None)
        self.load_seconds[name] = time.perf_counter() - started
        if old is not None:
            old.close(checkpoint=False)

    def drop(self, name: str) -> ServedIndex | None:
        """Stop serving ``name`` (its files stay); returns the closed index."""
        live = self.indexes.pop(name, None)
        self.failed.pop(name, None)
        self.load_seconds.pop(name, None)
        if live is not None:
            live.close()
        return live

    def close(self) -> None:
        self.jobs.shutdown()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.writer.shutdown(wait=True)  # let acknowledged-to-be writes finish before the checkpoint
        for live in self.indexes.values():
            try:
                live.close()
            except Exception as exc:  # the write-ahead log still holds everything: log, go on closing
                log.error("index %s not checkpointed at shutdown: %s", live.name, exc)
