"""The SPLADE kind's in-memory side: the impact matrix opened as the settings want it, the probes an approximate
search scores, and one view's matrices searched as one index (every shard's candidates ranked together, as the
Lucene path ranks them)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from indexes.kinds.base import KindError, ViewState
from indexes.storage.docstore.manifest import RetrieverManifest
from indexes.storage.docstore.store import DocStore
from indexes.storage.lucene import anserini_order
from indexes.storage.lucene.direct import anserini_ranked, ranked_run
from indexes.storage.sparse import impact_matrix
from indexes.storage.sparse.impact_matrix import ImpactMatrix
from retrieval.core.filters import Filter
from retrieval.core.options import OpenOptions
from retrieval.core.types import ScoredDoc, SparseVector

log = logging.getLogger(__name__)


class MatrixSearch:
    """The in-memory matrix as one view sees it: the docnos the view may return, ranked as the Lucene path ranks
    them (score, then id; Anserini's tie rounding), so both give the same hits and scores. ``probes`` (one per
    shard; None: exact): the clusters an approximate search scores where the matrix has them."""

    def __init__(self, matrices: Sequence[ImpactMatrix], stores: Sequence[DocStore], views: Sequence[ViewState],
                 probes: Sequence[int | None] | None = None) -> None:
        self._shards = list(zip(matrices, stores, views))
        self.probes = list(probes) if probes is not None else [None] * len(self._shards)
        anserini_order.warm()

    def top(self, vectors: Sequence[SparseVector], k: int, where: Filter | None = None, exact: bool = False
            ) -> list[Sequence[ScoredDoc]]:
        """Each query's ranking: every shard's candidates (its top ``k`` and the ties at its cut) ranked together,
        then rounded once, so a sharded index ranks exactly as one index would. ``where``: only the documents a
        metadata filter selects (the document store's answer, as for dense, asked once for all the queries), ranked
        before the cut, as Lucene's FILTER clause does. ``exact``: every row, whatever the probes."""
        allowed = [store.filter_mask(where) if where is not None else None for _, store, _ in self._shards]
        probes = [None] * len(self._shards) if exact else self.probes
        if len(self._shards) == 1:  # one document store: the runs keep its docnos, for fusion in arrays
            (matrix, store, view), = self._shards
            out = []
            for vector in vectors:
                ranked = matrix.search_ranked(vector, k, view.bound, view.bitmap, allowed[0], probes[0])  # type: ignore[arg-type]
                out.append(ranked_run(*ranked, k, store))
            return out
        runs = []
        for vector in vectors:
            hits: list[tuple[float, str]] = []
            for (matrix, store, view), selected, shard_probes in zip(self._shards, allowed, probes):
                pairs = matrix.search(vector, k, view.bound, view.bitmap, selected, shard_probes)  # type: ignore[arg-type]
                ids = store.ids_by_docno([docno for _, docno in pairs])
                hits += [(score, doc_id) for (score, _), doc_id in zip(pairs, ids) if doc_id is not None]
            runs.append(anserini_ranked(hits, k))
        return runs


def open_matrix(folder: Path, name: str, options: OpenOptions) -> ImpactMatrix | None:
    """The retriever's impact matrix as ``options.splade_search`` wants it: in memory for searches, or only for
    keeping it current under live writes (Lucene searches), or None when the index has none."""
    if not impact_matrix.exists(folder):
        if options.splade_search == "matrix":
            raise KindError(f"retriever {name!r} has no impact matrix (built without it, or by an older version); "
                            "rebuild the index, or set splade_search to 'lucene' or 'auto'")
        return None
    wanted = options.splade_search == "matrix"
    if options.splade_search == "auto":
        size = impact_matrix.memory_bytes(folder)
        wanted = size <= options.splade_matrix_max_mb * 2**20
        if not wanted:
            log.info("retriever %s: impact matrix of %.0f MiB is above splade_matrix_max_mb; searching through Lucene",
                     name, size / 2**20)
    return ImpactMatrix(folder, rows=wanted)


def default_probes(entry: RetrieverManifest, matrix: ImpactMatrix | None, options: OpenOptions) -> int | None:
    """The clusters an approximate search scores: the option's, else the index's tuned value, else
    :data:`DEFAULT_PROBE_SHARE` of the clusters; None (exact) without clusters, with ``options.exact``, or where
    that is every cluster (the exhaustive kernel gives the same hits faster: Cranfield, 45 clusters, all needed)."""
    if options.exact or matrix is None or matrix.clusters is None:
        return None
    tuned = (entry.search_tuning or {}).get("parameters", {}).get("probes")
    if options.splade_probes is not None:
        probes = options.splade_probes
    else:
        probes = int(tuned) if tuned else max(DEFAULT_PROBES, round(DEFAULT_PROBE_SHARE * matrix.clusters.count))
    return None if probes >= matrix.clusters.count else probes


DEFAULT_PROBES, DEFAULT_PROBE_SHARE = 16, 0.01  # an untuned clustered matrix (tune it: hybrid index tune)
