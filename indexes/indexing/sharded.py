"""A sharded index open for serving: every shard searched as one, read-only for now.

Searches go through :meth:`Searcher.open`'s sharded path (one ``MultiReader`` per Lucene retriever, dense
merged by score), so the REST API, ``hybrid search`` and the harness answer exactly as for an unsharded
index of the same documents. Live upserts and deletes are refused with a 409 that says so: routing them to
the owning shard's write-ahead log, and a view that spans the shards' latest readers, are the next step of
the scale-out work. :func:`open_index` picks this class or :class:`LiveIndex` from the manifest.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Union

from indexes.indexing.live import IndexFailedError, LiveIndex, WriteResult
from indexes.storage.corpus import Document
from indexes.storage.layout import IndexRoot
from indexes.storage.manifest import Manifest
from retrieval.core.errors import ConflictError
from retrieval.core.options import OpenOptions
from retrieval.search.pipeline import Searcher


class ShardedWriteError(ConflictError, RuntimeError):
    """A live write sent to a sharded index."""


class ShardedIndex:
    """Duck-types the reading side of :class:`LiveIndex` for a sharded index; writes raise :class:`ShardedWriteError`."""

    def __init__(self, folder: Path, searcher: Searcher, name: str) -> None:
        self.folder = folder
        self.name = name
        self._searcher = searcher
        self.manifest = searcher.manifest
        self.options = searcher.options
        self._lock = threading.Lock()
        self._refs = 1  # one for being open; each search in flight holds another
        self._closed = False

    @classmethod
    def open(cls, folder: Path, options: OpenOptions | None = None, **overrides: Any) -> ShardedIndex:
        folder = Path(folder).resolve()
        searcher = Searcher.open(folder, replace(options or OpenOptions(), **overrides))
        name = folder.name.split("@", 1)[0] if "@" in folder.name else folder.name
        return cls(folder, searcher, name)

    @property
    def seq(self) -> int:
        return 0

    @property
    def doc_count(self) -> int:
        return self.manifest.doc_count

    @property
    def retrievers(self) -> list[str]:
        return list(self.manifest.retrievers)

    @contextmanager
    def view(self) -> Iterator[Searcher]:
        """The searcher (one point in time for the index's life: nothing writes to it), held for the block so that
        a reload's ``close`` waits for the searches in flight."""
        with self._lock:
            if self._refs == 0:
                raise IndexFailedError(f"index {self.name!r} is closed")
            self._refs += 1
        try:
            yield self._searcher
        finally:
            self._release()

    def _release(self) -> None:
        with self._lock:
            self._refs -= 1
            done = self._refs == 0
        if done:
            self._searcher.close()

    check_documents = staticmethod(LiveIndex.check_documents)

    def _refuse(self) -> ShardedWriteError:
        return ShardedWriteError(f"index {self.name!r} is sharded ({len(self.manifest.shards)} shards), and sharded "
                                 "indexes take no live writes yet; rebuild it (hybrid index build --shards) to change "
                                 "its documents")

    def upsert(self, docs: Sequence[Document]) -> WriteResult:
        raise self._refuse()

    def delete(self, ids: Sequence[str]) -> WriteResult:
        raise self._refuse()

    def checkpoint(self) -> None:
        pass  # nothing is written, so there is nothing to make durable

    def compact(self) -> None:
        raise self._refuse()

    def snapshot(self, root: Path) -> Path:
        raise self._refuse()

    def stop_writes(self, checkpoint: bool = True) -> None:
        pass

    def close(self, checkpoint: bool = True) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._release()


ServedIndex = Union[LiveIndex, ShardedIndex]


def open_index(folder: Path, options: OpenOptions | None = None, *, root: IndexRoot | None = None,
               **overrides: Any) -> ServedIndex:
    """The index in ``folder`` open for serving: live (writes and views) or, if sharded, read-only."""
    if Manifest.read(Path(folder)).shards:
        return ShardedIndex.open(folder, options, **overrides)
    return LiveIndex.open(folder, options, root=root, **overrides)
