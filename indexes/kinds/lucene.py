"""What the Lucene kinds (BM25, learned sparse impacts) share: a component over one Lucene index.

Searches run on Lucene directly (``indexes.storage.lucene.direct``); a live component also holds an
``IndexWriter`` and gives each view's searcher a near-real-time reader of it, so a view sees uncommitted
writes. The component keeps the per-segment id tables, so a new view reads the ids of new segments only.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from indexes.kinds.base import Component, RetrieverSearcher, ViewState, WriteBatch
from indexes.storage.docstore.manifest import RetrieverManifest
from indexes.storage.docstore.store import DocStore
from indexes.storage.lucene.direct import SegmentIds, multi_reader, open_reader
from indexes.storage.lucene.engine import check_readable
from indexes.storage.lucene.writer import Kind, LuceneWriter, committed_seq, write_new_index
from retrieval.core.jvm import JNI_LOCK


class LuceneComponent(Component):
    writer_kind: ClassVar[Kind]

    _writer: LuceneWriter | None = None
    _segment_ids: SegmentIds | None = None

    @property
    def segment_ids(self) -> SegmentIds:
        if self._segment_ids is None:
            self._segment_ids = SegmentIds()
        return self._segment_ids

    def __init__(self, index_folder: Path, name: str, entry: RetrieverManifest, device: str) -> None:
        # Before Lucene sees the files: a newer Lucene's index is refused with "rebuild", not a stack trace.
        check_readable(index_folder.name.split("@", 1)[0], name, entry.lucene_major)
        super().__init__(index_folder, name, entry, device)

    @abstractmethod
    def _searcher(self, encoder: Any, reader: Any, batch_size: int, ids: SegmentIds | None = None) -> RetrieverSearcher:
        """A searcher over ``reader`` (None: the committed index), taking the reader over; ``ids`` caches its
        segments' id tables (default: this component's)."""

    @abstractmethod
    def _documents(self, batch: WriteBatch) -> Iterable[tuple[str, Any]]:
        """(id, what Lucene indexes, metadata) for each upserted document."""

    def searcher(self, encoder: Any, store: DocStore, view: ViewState, batch_size: int) -> RetrieverSearcher:
        reader = self._writer.open_reader() if self._writer is not None else None
        try:
            return self._searcher(encoder, reader, batch_size)
        except BaseException:
            if reader is not None:
                with JNI_LOCK:
                    reader.close()
            raise

    @classmethod
    def merged_searcher(cls, components: Sequence[Component], encoder: Any, stores: Sequence[DocStore],
                        views: Sequence[ViewState], batch_size: int) -> RetrieverSearcher:
        """Every shard's Lucene index under one ``MultiReader``, searched once: statistics are collection-wide, so
        BM25 scores, ties and their order equal an unsharded index's (impacts need no statistics, but one search
        also keeps Anserini's tie rounding identical)."""
        readers: list[Any] = []
        try:
            for component in components:
                assert isinstance(component, LuceneComponent)
                writer = component._writer
                readers.append(writer.open_reader() if writer is not None else open_reader(component.folder))
            reader = multi_reader(readers)
        except BaseException:
            with JNI_LOCK:
                for opened in readers:
                    opened.close()
            raise
        first = components[0]
        assert isinstance(first, LuceneComponent)
        return first._searcher(encoder, reader, batch_size, ids=SegmentIds())

    def open_writer(self) -> None:
        if self._writer is None:
            self._writer = LuceneWriter(self.folder, self.writer_kind,
                                        doc_vectors=bool(self.entry.parameters.get("doc_vectors", True)))

    def replay_from(self) -> int:
        return committed_seq(self.folder)

    def apply(self, batch: WriteBatch) -> None:
        assert self._writer is not None, "open_writer() first"
        if batch.docs:
            self._writer.upsert(self._documents(batch))
        if batch.deleted_ids:
            self._writer.delete(batch.deleted_ids)

    def merge_deletes(self, threshold: float) -> bool:
        assert self._writer is not None
        fraction = self._writer.deleted_fraction()
        if fraction and fraction >= threshold:
            self._writer.merge_deletes()
            return True
        return False

    def commit(self, seq: int) -> list[str]:
        assert self._writer is not None
        return [f"{self.name}/{f}" for f in self._writer.commit(seq)]

    def close_writer(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()


def create_empty_lucene(out: Path, kind: Kind, doc_vectors: bool = True) -> None:
    """An empty committed Lucene index, set up as a batch build would set it up."""
    write_new_index(out, kind, (), doc_vectors)
