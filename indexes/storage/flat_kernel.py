"""Exact inner-product search over a flat FAISS index's own vectors, by a compiled loop (numba), on the CPU.

Why: for one query FAISS's flat kernel ran below the memory bandwidth that a plain compiled loop reaches. On the
2-core machine, one thread each (eval/bench/README.md, "Qdrant Edge"): 1M x 384, FAISS 57.6 ms, this loop 46.7 ms
(a BLAS product 46.1, Qdrant Edge's exact search 44-46); 100k, 4.9 against 3.9 ms; Cranfield's 1,398 rows, 43
against 19 us. A BLAS product is as fast but adds a row up in an order that depends on where the row sits in the
matrix, so a shard's scores would differ in the last bit from an unsharded index's; this loop adds every row in
the same order wherever it sits, for one query or many, so sharded, unsharded, single and batched searches all
give the same scores. Rows a view or a filter drops are skipped, not scored: a selective filter reads less.

Nothing is copied: the rows are a numpy view of the FAISS index's storage, so the FAISS file stays the one copy in
memory and the index of record. An add or a compaction may move that storage: :class:`FaissIndex` calls
:meth:`FlatKernel.refresh` under its write lock after each, and searches run under its read lock.

Results match :meth:`indexes.storage.faiss_backend.FaissIndex.search`: (scores, docnos) of shape ``(queries, k)``,
``-inf``/``-1`` padded, best first, equal scores by docno, every tie at the cut considered. A score can differ from
FAISS's in the last bit (FAISS adds in another order; its own batched search, BLAS past 20 queries, differs from its
single-query one too).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from indexes.storage import top_k

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; without it flat indexes go through FAISS
    numba = None

QUERY_BLOCK = 16  # queries scored per pass over the rows: each row is read from memory once for all of them
_FLOOR = np.float32(-np.finfo(np.float32).max)  # every finite score; masked rows are -inf
_NO_MASK = np.zeros(0, dtype=np.bool_)


def _scores_py(vectors: np.ndarray, rows: int, queries: np.ndarray, mask: np.ndarray, out: np.ndarray) -> None:
    """``out[b, i] = vectors[i] . queries[b]`` for the first ``rows`` rows; -inf where ``mask`` (if not empty) is
    False. The inner loop is the same compiled code for every row and query, so a row's score does not depend on
    its position or on the other queries."""
    masked = len(mask) > 0
    dims = vectors.shape[1]
    for i in range(rows):
        if masked and not mask[i]:
            for b in range(queries.shape[0]):
                out[b, i] = -np.inf
            continue
        for b in range(queries.shape[0]):
            acc = np.float32(0)
            for j in range(dims):
                acc += vectors[i, j] * queries[b, j]
            out[b, i] = acc


_scores = numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})(_scores_py) if numba is not None else None


def _search_py(vectors: np.ndarray, rows: int, queries: np.ndarray, mask: np.ndarray, k: int, docnos: np.ndarray,
               out_scores: np.ndarray, out_docnos: np.ndarray) -> None:
    """Each query's top ``k`` into ``out_*`` (left as they are past the hits), best first, equal scores by docno; one
    compiled call per search, scoring :data:`QUERY_BLOCK` queries per pass over the rows."""
    n = queries.shape[0]
    buffer = np.empty((min(n, QUERY_BLOCK), rows), dtype=np.float32)
    for start in range(0, n, QUERY_BLOCK):
        block = queries[start:start + QUERY_BLOCK]
        _scores(vectors, rows, block, mask, buffer)
        for b in range(block.shape[0]):
            at, found = top_k.select(buffer[b], k, _FLOOR)
            # ``at`` ascends and rows are in docno order: a stable sort by score puts ties in docno order
            order = np.argsort(-found, kind="mergesort")
            for j in range(min(k, len(order))):
                out_scores[start + b, j] = found[order[j]]
                out_docnos[start + b, j] = docnos[at[order[j]]]


_search = numba.njit(cache=True, nogil=True)(_search_py) if numba is not None else None


def available() -> bool:
    return _search is not None


def _faiss() -> Any:
    import faiss

    return faiss


class FlatKernel:
    """The searcher of one ID-mapped ``IndexFlatIP`` (``faiss.IndexIDMap2``); the caller holds its read lock."""

    dtype_name = "fp32"

    def __init__(self, index: Any) -> None:
        if not available():
            raise RuntimeError("the flat kernel needs numba")
        self._index = index
        self._inner = _faiss().downcast_index(index.index)
        self.dimension = int(index.d)
        self._mask: tuple[Any, int, np.ndarray] | None = None  # (weakref to the last bitmap, rows, its row mask)
        self.refresh()
        self.search(np.zeros((1, self.dimension), dtype=np.float32), 1)  # compile (or load the cached code) now

    def refresh(self) -> None:
        """Take the views of FAISS's memory anew (after an add or a compaction, under the index's write lock)."""
        faiss = _faiss()
        n = int(self._inner.ntotal)
        if n == 0:
            self._views = np.zeros((0, self.dimension), dtype=np.float32), np.zeros(0, dtype=np.int64)
            return
        vectors = faiss.rev_swig_ptr(self._inner.get_xb(), n * self.dimension).reshape(n, self.dimension)
        self._views = vectors, faiss.rev_swig_ptr(self._index.id_map.data(), n)
        self._mask = None

    def _row_mask(self, bitmap: np.ndarray, rows: int, docnos: np.ndarray) -> np.ndarray:
        """Which of the first ``rows`` rows a view's docno bitmap keeps; the last one is cached, since a view's
        bitmap is built once and searched many times."""
        cached = self._mask
        if cached is not None and cached[0]() is bitmap and cached[1] == rows:
            return cached[2]
        bits = np.unpackbits(bitmap, bitorder="little")
        keep = np.zeros(rows, dtype=bool)
        inside = docnos < len(bits)
        keep[inside] = bits[docnos[inside]].astype(bool)
        try:
            self._mask = (weakref.ref(bitmap), rows, keep)
        except TypeError:
            self._mask = None
        return keep

    def search(self, queries: np.ndarray, k: int, bound: int | None = None,
               bitmap: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` (scores, docnos; -1 pads) among docnos below ``bound`` whose ``bitmap`` bit is set."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n = len(queries)
        vectors, docnos = self._views
        rows = len(docnos) if bound is None else int(np.searchsorted(docnos, bound, side="left"))
        out_scores = np.full((n, k), -np.inf, np.float32)
        out_docnos = np.full((n, k), -1, np.int64)
        if rows == 0 or n == 0:
            return out_scores, out_docnos
        mask = self._row_mask(bitmap, rows, docnos[:rows]) if bitmap is not None else _NO_MASK
        _search(vectors, rows, queries, mask, k, docnos, out_scores, out_docnos)  # type: ignore[misc]
        return out_scores, out_docnos
