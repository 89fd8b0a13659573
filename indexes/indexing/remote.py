"""A sharded index whose shards live in other processes (Ray Serve replicas), served as one index.

This is the index :mod:`service.ray_serve`'s ingress holds. It does what :class:`ShardedLiveIndex` does in
one process, through clients instead of objects: each retriever's queries are encoded once (by the
query-encoder client, where the kind can encode without the index) and sent to every shard, and the
shards' lists are merged by score (:func:`~indexes.kinds.base.merge_runs`); documents are fetched from
the shard that owns them; writes are split by :func:`~indexes.storage.docstore.shards.shard_of`. Everything
above the retriever searchers (fusion, pages, highlights, PRF wiring, filters' parsing) is the same
:class:`~retrieval.search.pipeline.Searcher`.

How remote shards differ from one process (stated in README "Scale-out", as Elasticsearch states its
``query_then_fetch``):

* **BM25** scores with each shard's own collection statistics (document count, average length, document
  frequencies), not the whole index's: no ``MultiReader`` spans processes. Scores differ slightly, and so
  can rankings; ``eval/bench/remote_shards.py`` measures the nDCG@10 effect.
* **SPLADE and dense** scores do not depend on other documents: the merged lists equal one process's.
* **PRF** takes its feedback documents from each shard's own top hits.
* **Writes** are durable on every shard they reach when acknowledged (each shard's write-ahead log), but a
  write that spans shards becomes visible shard by shard, not at one instant.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from indexes.indexing.live import LiveIndex, WriteResult
from indexes.indexing.sharded import current_manifest
from indexes.kinds import get_kind
from indexes.kinds.base import RetrieverRuns, merge_runs
from indexes.storage.docstore.corpus import Document
from indexes.storage.docstore.manifest import Manifest
from indexes.storage.docstore.shards import ShardedStore, positions_by_shard
from retrieval.core.errors import HybridError
from retrieval.core.fields import FieldSchema
from retrieval.core.filters import Filter
from retrieval.core.options import OpenOptions
from retrieval.core.types import Encoded, PrfConfig
from retrieval.search.pipeline import Searcher


class RemoteIndexError(HybridError, RuntimeError):
    """An operation a remote sharded index cannot do; the message says what to do instead."""

    http_status = 409


@dataclass
class ShardState:
    """What a shard reports after opening and after each write."""

    manifest: Manifest
    seq: int
    doc_count: int


class Pending(Protocol):
    def result(self) -> Any: ...


class ShardClient(Protocol):
    """One shard, wherever it runs; every call returns at once with a :class:`Pending` answer, so a fan-out
    waits for the slowest shard, not for the sum."""

    def search(self, retriever: str, queries: Sequence[str], depth: int, threads: int, prf: PrfConfig | None,
               mode: str | None, given: Sequence[Any] | None, where: Filter | None, exact: bool = False
               ) -> Pending: ...

    def get(self, ids: Sequence[str]) -> Pending: ...

    def upsert(self, docs: Sequence[Document]) -> Pending: ...

    def delete(self, ids: Sequence[str]) -> Pending: ...

    def state(self) -> Pending: ...

    def checkpoint(self) -> Pending: ...


class EncoderClient(Protocol):
    def encode(self, retriever: str, queries: Sequence[str], mode: str | None) -> Pending: ...


class RemoteStore:
    """One shard's documents, read through its client (for :class:`ShardedStore`)."""

    def __init__(self, client: ShardClient) -> None:
        self.client = client

    def get(self, ids: Sequence[str], seq: int | None = None) -> dict[str, Document]:
        return self.client.get(list(ids)).result()  # type: ignore[no-any-return]

    def close(self) -> None:
        pass


class RemoteRetrieverSearcher:
    """One retriever over remote shards: encode once, search every shard at once, merge by score."""

    remote = True  # the Searcher runs remote retrievers of one request at once

    def __init__(self, name: str, shards: Sequence[ShardClient], encoder: EncoderClient | None) -> None:
        self.name = name
        self.shards = list(shards)
        self.encoder = encoder

    def search(self, queries: Sequence[str], depth: int, threads: int, prf: PrfConfig | None = None,
               mode: str | None = None, given: Sequence[Any] | None = None, where: Filter | None = None,
               exact: bool = False) -> RetrieverRuns:
        encode_ms = 0.0
        if given is None and self.encoder is not None:
            started = time.perf_counter()
            encoded: Encoded | None = self.encoder.encode(self.name, list(queries), mode).result()
            encode_ms = (time.perf_counter() - started) * 1000.0
            given = encoded
        pending = [s.search(self.name, list(queries), depth, threads, prf, mode, given, where, exact)
                   for s in self.shards]
        results: list[RetrieverRuns] = [p.result() for p in pending]
        runs = [merge_runs([r.runs[q] for r in results], depth) for q in range(len(queries))]
        return RetrieverRuns(runs, encode_ms + max(r.encode_ms for r in results), max(r.search_ms for r in results))

    def close(self) -> None:
        pass


class RemoteShardedIndex:
    """The duck-typed twin of :class:`LiveIndex` for shards behind clients; see the module docstring."""

    check_documents = staticmethod(LiveIndex.check_documents)

    def __init__(self, folder: Path, name: str, shards: Sequence[ShardClient], encoder: EncoderClient | None,
                 options: OpenOptions) -> None:
        self.folder = folder
        self.name = name
        self.options = options
        self.shards = list(shards)
        self.encoder = encoder
        self._base = Manifest.read(folder)
        self._lock = threading.Lock()
        self._states: list[ShardState] = []
        self._searcher: Searcher | None = None
        self.refresh()

    def refresh(self) -> None:
        """Ask every shard for its state (documents, field types, seq) and rebuild the searcher over them."""
        states = [p.result() for p in [s.state() for s in self.shards]]
        # Kinds without query vectors (BM25 searches text) skip the encoder's hop.
        searchers: dict[str, Any] = {
            name: RemoteRetrieverSearcher(name, self.shards, self.encoder if get_kind(entry.kind).vector_input else None)
            for name, entry in self._base.retrievers.items()}
        store = ShardedStore([RemoteStore(s) for s in self.shards])  # type: ignore[list-item]
        with self._lock:
            self._states = states
            self._searcher = Searcher(self.folder, self.manifest, store, searchers, self.options,  # type: ignore[arg-type]
                                      seq=None, owns_store=False)

    # --- reading -------------------------------------------------------------------------------------

    @property
    def manifest(self) -> Manifest:
        """As the shards reported it after this process's last write or reload (another ingress replica's writes
        show in searches at once, in these counts at the next write or reload here)."""
        return current_manifest(self._base, [(s.manifest, s.doc_count) for s in self._states])

    @property
    def seq(self) -> int:
        return sum(s.seq for s in self._states)

    @property
    def doc_count(self) -> int:
        return sum(s.doc_count for s in self._states)

    @property
    def retrievers(self) -> list[str]:
        return list(self._base.retrievers)

    @contextmanager
    def view(self) -> Iterator[Searcher]:
        searcher = self._searcher
        assert searcher is not None
        yield searcher

    # --- writing -------------------------------------------------------------------------------------

    def _parts(self, ids: Sequence[str]) -> dict[int, list[int]]:
        return positions_by_shard(ids, len(self.shards))

    def upsert(self, docs: Sequence[Document]) -> WriteResult:
        """Each document to its shard, every part checked against its shard's field types first; durable on
        every shard when it returns."""
        self.check_documents(docs)
        parts = {i: [docs[p] for p in positions] for i, positions in sorted(self._parts([d.id for d in docs]).items())}
        for i, part in parts.items():
            FieldSchema(self._states[i].manifest.fields).accept((d.id, d.metadata) for d in part)
        results: list[WriteResult] = [p.result() for p in [self.shards[i].upsert(part) for i, part in parts.items()]]
        self.refresh()
        return WriteResult(seq=self.seq, upserted=sum(r.upserted for r in results),
                           encode_ms=max(r.encode_ms for r in results), apply_ms=max(r.apply_ms for r in results))

    def delete(self, ids: Sequence[str]) -> WriteResult:
        unique = list(dict.fromkeys(ids))
        pending = [self.shards[i].delete([unique[p] for p in positions]) for i, positions in sorted(self._parts(unique).items())]
        results: list[WriteResult] = [p.result() for p in pending]
        self.refresh()
        missing = set().union(*(r.missing for r in results)) if results else set()
        return WriteResult(seq=self.seq, deleted=sum(r.deleted for r in results),
                           missing=[i for i in unique if i in missing], apply_ms=max((r.apply_ms for r in results), default=0.0))

    def checkpoint(self) -> None:
        for p in [s.checkpoint() for s in self.shards]:
            p.result()

    def compact(self) -> None:
        raise RemoteIndexError("compaction of an index served on Ray runs in each shard as its checkpoints do; "
                               "there is no index-wide compaction over remote shards")

    def snapshot(self, root: Path) -> Path:
        raise RemoteIndexError("snapshots of an index served on Ray are not taken over the API: stop the Ray "
                               "application (every shard checkpoints) and copy the index folder, or serve it "
                               "without --ray and take one there")

    # --- closing -------------------------------------------------------------------------------------

    def stop_writes(self, checkpoint: bool = True) -> None:
        if checkpoint:
            self.checkpoint()

    def close(self, checkpoint: bool = True) -> None:
        """The shards are Ray Serve's to stop (each checkpoints when its replica shuts down)."""
