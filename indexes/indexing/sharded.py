"""A sharded index open for searching and writing: one :class:`LiveIndex` per shard, searched as one.

Writes: an upsert or a delete is split by :func:`shard_of` and each part goes to its shard's
:class:`LiveIndex`, which keeps every guarantee it has alone (write-ahead log fsynced before the
acknowledgement, replay after a crash, checkpoints, compaction). Shards are written one after another
under the index's write lock, and the request is acknowledged when every part is durable; a crash in
between keeps the parts already logged (each shard replays its own log), as Elasticsearch keeps the
shards a bulk request reached.

Reads: after each write, one merged view is published over the shards' current state (each Lucene
retriever's shard readers under one ``MultiReader``, dense merged by score, the stores read at each
shard's ``seq``), so a search sees all of a write or none of it, across shards too, and ranks exactly
as an unsharded index of the same documents would. Views are reference counted as :class:`LiveIndex`
does it. :func:`open_index` picks this class or :class:`LiveIndex` from the manifest.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any, Union

from indexes.indexing.live import LiveIndex, WriteResult, write_snapshot
from indexes.indexing.views import IndexFailedError, Views
from indexes.kinds.base import ViewState
from indexes.storage.docstore.corpus import Document
from indexes.storage.docstore.layout import IndexRoot
from indexes.storage.docstore.manifest import Manifest
from indexes.storage.docstore.shards import ShardedStore, positions_by_shard
from retrieval.core.fields import FieldSchema
from retrieval.core.java_text import checked_value
from retrieval.core.options import OpenOptions
from retrieval.search.pipeline import Searcher


def current_manifest(base: Manifest, shards: Sequence[tuple[Manifest, int]]) -> Manifest:
    """A sharded index's manifest with its shards' current (manifest, documents): counts summed, field types
    widened, the latest checkpoint."""
    schema = FieldSchema.union(manifest.fields for manifest, _ in shards)
    updates = [manifest.updated for manifest, _ in shards if manifest.updated]
    return replace(base, doc_count=sum(count for _, count in shards), fields=schema.as_dict(),
                   updated=max(updates) if updates else base.updated)


class ShardedLiveIndex:
    """The duck-typed twin of :class:`LiveIndex` for a sharded index; see the module docstring."""

    def __init__(self, folder: Path, manifest: Manifest, shards: list[LiveIndex], options: OpenOptions,
                 root: IndexRoot | None, name: str) -> None:
        self.folder = folder
        self.name = name
        self.options = options
        self.shards = shards
        self._base = manifest
        self._root = root
        self._write_lock = threading.RLock()
        self._views = Views(name)
        self._held = ExitStack()
        self._locked = False
        self._closed = False

    @classmethod
    def open(cls, folder: Path, options: OpenOptions | None = None, *, root: IndexRoot | None = None,
             **overrides: Any) -> ShardedLiveIndex:
        options = replace(options or OpenOptions(), **overrides)
        folder = Path(folder).resolve()
        manifest = Manifest.read(folder)
        name = folder.name.split("@", 1)[0] if "@" in folder.name else folder.name
        shards: list[LiveIndex] = []
        try:
            for i, rel in enumerate(manifest.shards):
                shard = LiveIndex.open(folder / rel, options)  # verifies its files, replays its own log
                shard.name = f"{name}/shard-{i}"
                shards.append(shard)
            live = cls(folder, manifest, shards, options, root, name)
            live._publish()
        except BaseException:
            for shard in shards:
                shard.close(checkpoint=False)
            raise
        return live

    # --- reading -------------------------------------------------------------------------------------

    @property
    def manifest(self) -> Manifest:
        """The index's manifest with what the shards hold now: documents, fields, the last checkpoint."""
        return current_manifest(self._base, [(s.manifest, s.doc_count) for s in self.shards])

    @property
    def seq(self) -> int:
        """Write batches applied over all shards (a write that reaches two shards counts twice)."""
        return sum(s.seq for s in self.shards)

    @property
    def doc_count(self) -> int:
        return sum(s.doc_count for s in self.shards)

    @property
    def retrievers(self) -> list[str]:
        return list(self._base.retrievers)

    def view(self) -> AbstractContextManager[Searcher]:
        return self._views.hold()

    def _publish(self) -> None:
        """One searcher over every shard's current state (their writers' near-real-time readers, the docnos
        their views hold, their stores at their seq), swapped in at once."""
        manifest = self.manifest
        names = list(manifest.retrievers)
        stores = [s.store for s in self.shards]
        views = [ViewState(s._bound, s._bitmap) for s in self.shards]
        searchers: dict[str, Any] = {}
        try:
            for retriever in names:
                components = [s._components[retriever] for s in self.shards]
                searchers[retriever] = type(components[0]).merged_searcher(
                    components, self.shards[0].encoders[retriever], stores, views, self.options.batch_size)
        except BaseException:
            for searcher in searchers.values():
                searcher.close()
            raise
        store = ShardedStore(stores, [s.seq for s in self.shards])
        self._views.publish(Searcher(self.folder, manifest, store, searchers, self.options, owns_store=False), self.seq)

    # --- writing -------------------------------------------------------------------------------------

    check_documents = staticmethod(LiveIndex.check_documents)

    def _lock_for_writes(self) -> None:
        """The index's write lock across processes (shards are opened without it), as :class:`LiveIndex` takes it."""
        if self._closed:
            raise IndexFailedError(f"index {self.name!r} is closed")
        if self._locked or self._root is None:
            return
        self._held.enter_context(self._root.writer_lock(self.name, self.folder))
        self._locked = True

    def _parts(self, ids: Sequence[str]) -> dict[int, list[int]]:
        return positions_by_shard(ids, len(self.shards))

    def upsert(self, docs: Sequence[Document]) -> WriteResult:
        """Each document to its shard; durable everywhere when it returns, visible to searches at once."""
        self.check_documents(docs)
        with self._write_lock:
            self._lock_for_writes()
            parts = {i: [docs[p] for p in positions] for i, positions in sorted(self._parts([d.id for d in docs]).items())}
            # Every part is checked against its shard's field types first, so that no shard takes a part of a batch
            # another shard refuses.
            for i, part in parts.items():
                FieldSchema(self.shards[i].manifest.fields).accept((d.id, d.metadata) for d in part)
            results = [self.shards[i].upsert(part) for i, part in parts.items()]
            self._publish()
        return WriteResult(seq=self.seq, upserted=sum(r.upserted for r in results),
                           encode_ms=sum(r.encode_ms for r in results), apply_ms=sum(r.apply_ms for r in results))

    def delete(self, ids: Sequence[str]) -> WriteResult:
        unique = [checked_value(i, "_id") for i in dict.fromkeys(ids)]
        with self._write_lock:
            self._lock_for_writes()
            results = [self.shards[i].delete([unique[p] for p in positions])
                       for i, positions in sorted(self._parts(unique).items())]
            self._publish()
        missing = set().union(*(r.missing for r in results)) if results else set()
        return WriteResult(seq=self.seq, deleted=sum(r.deleted for r in results),
                           missing=[i for i in unique if i in missing], apply_ms=sum(r.apply_ms for r in results))

    def checkpoint(self) -> None:
        with self._write_lock:
            for shard in self.shards:
                shard.checkpoint()

    def compact(self) -> None:
        with self._write_lock:
            self._lock_for_writes()
            for shard in self.shards:
                shard.compact()
            self._publish()

    def snapshot(self, root: Path) -> Path:
        """Write a point-in-time copy as ``root/NAME@STAMP/NAME``, every shard checkpointed and copied under the
        index's write lock (so no write falls between two shards' copies): an index root ``hybrid serve`` loads."""
        def fill(folder: Path) -> None:
            for shard, rel in zip(self.shards, self._base.shards):
                shard.copy_to(folder / rel)
            replace(self.manifest, files={}).write(folder)

        with self._write_lock:
            self.checkpoint()
            return write_snapshot(root, self.name, self.seq, fill)

    # --- closing -------------------------------------------------------------------------------------

    def stop_writes(self, checkpoint: bool = True) -> None:
        with self._write_lock:
            try:
                for shard in self.shards:
                    shard.stop_writes(checkpoint)
            finally:
                self._closed = True
                self._held.close()

    def close(self, checkpoint: bool = True) -> None:
        try:
            self.stop_writes(checkpoint)
        finally:
            self._views.close()
            for shard in self.shards:
                shard.close(checkpoint=False)


ServedIndex = Union[LiveIndex, ShardedLiveIndex]


def open_index(folder: Path, options: OpenOptions | None = None, *, root: IndexRoot | None = None,
               **overrides: Any) -> ServedIndex:
    """The index in ``folder`` open for searching and live writes, sharded or not."""
    if Manifest.read(Path(folder)).shards:
        return ShardedLiveIndex.open(folder, options, root=root, **overrides)
    return LiveIndex.open(folder, options, root=root, **overrides)
