"""One searcher per retriever: query text in, ranked (doc id, raw score) list out.

Each pairs a query encoder (none for BM25) with an index backend and times the two halves, so
latency can be reported as encode / search / fuse.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from indexes.docstore import DocStore
from indexes.faiss_backend import FaissIndex
from indexes.lucene_backend import Bm25Index, ImpactIndex
from retrieval.dense_encoder import DenseEncoder
from retrieval.fusion import ScoredDoc
from retrieval.sparse_encoder import Quantization, SpladeEncoder


@dataclass
class RetrieverRuns:
    runs: list[list[ScoredDoc]]
    encode_ms: float
    search_ms: float


class RetrieverSearcher(Protocol):
    name: str

    def search(self, queries: Sequence[str], depth: int, threads: int) -> RetrieverRuns: ...

    def close(self) -> None: ...


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


class Bm25Searcher:
    name = "bm25"

    def __init__(self, index: Bm25Index) -> None:
        self._index = index

    def search(self, queries: Sequence[str], depth: int, threads: int) -> RetrieverRuns:
        started = time.perf_counter()
        if len(queries) == 1:
            runs = [self._index.search(queries[0], depth)]
        else:
            runs = self._index.batch_search(queries, depth, threads)
        return RetrieverRuns(runs, 0.0, _ms(started))

    def close(self) -> None:
        self._index.close()


class SpladeSearcher:
    name = "splade"

    def __init__(self, index: ImpactIndex, encoder: SpladeEncoder, quant: Quantization, batch_size: int) -> None:
        self._index = index
        self._encoder = encoder
        self._quant = quant
        self._batch_size = batch_size

    def search(self, queries: Sequence[str], depth: int, threads: int) -> RetrieverRuns:
        started = time.perf_counter()
        vectors = self._encoder.encode_queries(queries, self._quant, batch_size=self._batch_size)
        encode_ms = _ms(started)
        started = time.perf_counter()
        if len(vectors) == 1:
            runs = [self._index.search(vectors[0], depth)]
        else:
            runs = self._index.batch_search(vectors, depth, threads)
        return RetrieverRuns(runs, encode_ms, _ms(started))

    def close(self) -> None:
        self._index.close()


class DenseSearcher:
    """``bound`` and ``bitmap``: the docnos a point-in-time view of a live index may return."""

    name = "dense"

    def __init__(self, index: FaissIndex, encoder: DenseEncoder, store: DocStore, batch_size: int,
                 bound: int | None = None, bitmap: np.ndarray | None = None) -> None:
        if index.dimension != encoder.dimension:
            raise ValueError(f"FAISS index has dimension {index.dimension}, the model {encoder.dimension}")
        self._index = index
        self._encoder = encoder
        self._store = store
        self._batch_size = batch_size
        self._bound = bound
        self._bitmap = bitmap

    def search(self, queries: Sequence[str], depth: int, threads: int) -> RetrieverRuns:
        started = time.perf_counter()
        vectors = self._encoder.encode_queries(queries, batch_size=self._batch_size)
        encode_ms = _ms(started)
        started = time.perf_counter()
        scores, rows = self._index.search(vectors, depth, self._bound, self._bitmap)
        ids = self._store.ids_by_docno(rows.ravel().tolist())
        width = rows.shape[1]
        runs: list[list[ScoredDoc]] = []
        for q in range(len(queries)):
            run = []
            for j in range(width):
                doc_id = ids[q * width + j]
                if doc_id is not None and rows[q, j] >= 0:
                    run.append(ScoredDoc(doc_id, float(scores[q, j])))
            runs.append(run)
        return RetrieverRuns(runs, encode_ms, _ms(started))

    def close(self) -> None:
        pass
