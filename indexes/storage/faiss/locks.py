"""A read-write lock for one FAISS index: many searches at once, or one writer (FAISS reads are thread-safe, adds
and removals are not)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadWriteLock:
    """Many searches at once, or one writer: FAISS reads are thread-safe, adds and removals are not.

    ``read()`` hands back one reusable guard object rather than a generator-based context manager: on a small
    index the generator's set-up was a tenth of a dense search."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0
        self._read_guard = ReadGuard(self)

    def read(self) -> ReadGuard:
        return self._read_guard

    def _enter_read(self) -> None:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1

    def _exit_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class ReadGuard:
    """``with lock.read():`` (stateless, so one guard serves every thread)."""

    __slots__ = ("_lock",)

    def __init__(self, lock: ReadWriteLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock._enter_read()

    def __exit__(self, *exc: object) -> None:
        self._lock._exit_read()
