"""The indexes a server process holds open, loaded once at start-up and warmed with one query.

Each worker process loads its own copy (JVM, encoders, FAISS indexes): nothing is shared between
uvicorn workers except the files on disk. Inside a process, searches run on a fixed thread pool,
so the JVM sees a bounded set of attached threads and the event loop never blocks on encoding.
"""

from __future__ import annotations

import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from indexes.layout import IndexRoot
from retrieval.pipeline import Searcher
from retrieval.settings import Settings

log = logging.getLogger("hybrid.service")


_PATH = re.compile(r"(?<![\w.-])(?:/[^\s'\":]+)+")


def public_message(exc: BaseException) -> str:
    """An error message fit for clients: absolute file paths replaced, type kept."""
    return f"{type(exc).__name__}: {_PATH.sub('<path>', str(exc))}"


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
        for name in IndexRoot(self.settings.index_root).names():
            started = time.perf_counter()
            try:
                searcher = self._open(name)
            except Exception as exc:  # one broken index must not take the others down
                log.error("index %s not loaded: %s", name, exc)
                self.failed[name] = public_message(exc)
                continue
            self.searchers[name] = searcher
            self.load_seconds[name] = time.perf_counter() - started
        self.ready = True

    def _open(self, name: str) -> Searcher:
        root = IndexRoot(self.settings.index_root)
        searcher = Searcher.open(root.resolve(name), device=self.settings.resolved_device(),
                                 batch_size=self.settings.batch_size, threads=self.settings.threads,
                                 verify=self.settings.verify)
        searcher.search("warm up", k=1)
        return searcher

    def reload(self, name: str) -> None:
        """Open ``name`` afresh and swap it in; the old copy is dropped once no request holds it."""
        started = time.perf_counter()
        searcher = self._open(name)
        self.searchers[name] = searcher  # one dict store: atomic for readers
        self.failed.pop(name, None)
        self.load_seconds[name] = time.perf_counter() - started

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        for searcher in self.searchers.values():
            searcher.close()
