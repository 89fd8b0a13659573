"""Point-in-time searchers of an index that is written to, reference counted.

A write publishes a new searcher in one assignment; searches already running keep the one they started
with, and a searcher is closed (its Lucene readers released) when the last search holding it ends and a
newer one has replaced it. Shared by :class:`~indexes.indexing.live.LiveIndex` and the sharded index.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from retrieval.core.errors import UnavailableError
from retrieval.search.pipeline import Searcher


class IndexFailedError(UnavailableError, RuntimeError):
    """A write failed half-way; the index keeps serving its last view and refuses writes until reopened."""


@dataclass
class _View:
    searcher: Searcher
    seq: int
    refs: int = 1  # one for being the current view


class Views:
    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._open: list[_View] = []
        self._current: _View | None = None

    @contextmanager
    def hold(self) -> Iterator[Searcher]:
        """The current searcher, held for the duration of the block."""
        with self._lock:
            view = self._current
            if view is None:
                raise IndexFailedError(f"index {self.name!r} is closed")
            view.refs += 1
        try:
            yield view.searcher
        finally:
            self._release(view)

    def publish(self, searcher: Searcher, seq: int) -> None:
        """Make ``searcher`` (as of write ``seq``) the one new searches get."""
        view = _View(searcher, seq)
        with self._lock:
            previous, self._current = self._current, view
            self._open.append(view)
        if previous is not None:
            self._release(previous)

    def oldest_seq(self, default: int) -> int:
        """The oldest seq a searcher still open reads at (``default`` when none is older)."""
        with self._lock:
            return min([v.seq for v in self._open] + [default])

    def close(self) -> None:
        """No new searches; the current searcher closes when its last search ends."""
        with self._lock:
            current, self._current = self._current, None
        if current is not None:
            self._release(current)

    def _release(self, view: _View) -> None:
        with self._lock:
            view.refs -= 1
            done = view.refs == 0
            if done:
                self._open.remove(view)
        if done:
            view.searcher.close()
