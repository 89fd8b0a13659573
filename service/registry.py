"""The indexes a server process holds open, loaded once at start-up and warmed with one query.

Each worker process loads its own copy (JVM, encoders, FAISS indexes): nothing is shared between
uvicorn workers except the files on disk. Inside a process, searches run on a fixed thread pool,
so the JVM sees a bounded set of attached threads and the event loop never blocks on encoding.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from indexes.layout import IndexRoot
from indexes.manifest import Manifest
from retrieval.pipeline import Searcher
from retrieval.settings import Settings

log = logging.getLogger("hybrid.service")


@dataclass
class Registry:
    settings: Settings
    searchers: dict[str, Searcher] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    load_seconds: dict[str, float] = field(default_factory=dict)
    ready: bool = False
    executor: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=max(2, self.settings.threads * 2), thread_name_prefix="search")

    def load_all(self) -> None:
        root = IndexRoot(self.settings.index_root)
        device = self.settings.resolved_device()
        for name in root.names():
            started = time.perf_counter()
            try:
                searcher = Searcher.open(root.resolve(name), device=device, batch_size=self.settings.batch_size,
                                         threads=self.settings.threads)
                searcher.search("warm up", k=1)
            except Exception as exc:  # one broken index must not take the others down
                log.error("index %s not loaded: %s", name, exc)
                self.failed[name] = str(exc)
                continue
            self.searchers[name] = searcher
            self.load_seconds[name] = time.perf_counter() - started
        self.ready = True

    def manifest(self, name: str) -> Manifest | None:
        searcher = self.searchers.get(name)
        return searcher.manifest if searcher else None

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        for searcher in self.searchers.values():
            searcher.close()
