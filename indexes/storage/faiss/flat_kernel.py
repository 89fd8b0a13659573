"""Exact inner-product search over a flat FAISS index's own vectors, by a compiled loop (numba), on the CPU.

Why: for one query FAISS's flat kernel reads the rows more slowly than a compiled loop summing four rows at a time.
On the 2-core machine, one thread each (``python -m eval.bench.flat_cpu``, ``reports/bench/flat_cpu.json``): 1M x 384,
FAISS 55.5 ms, this loop 39.1 ms; 100k, 5.5 against 3.9 ms; batches of 64 queries 4x FAISS's rate; a filter keeping
1% of 1M documents, 3.6 against 0.7 ms, since rows a view or a filter drops are skipped, not scored. Below a few
thousand rows FAISS is faster (Cranfield's 1,398: 32 against 42 us). A BLAS product streams as fast, but adds a row
up in an order that depends on where the row sits in the matrix, so a shard's scores would differ in the last bit
from an unsharded index's; this loop adds every row with the same instructions wherever it sits, so sharded,
unsharded, single and batched searches all give the same scores.

Nothing is copied: the rows are a numpy view of the FAISS index's storage, so the FAISS file stays the one copy in
memory and the index of record. An add or a compaction may move that storage: :class:`FaissIndex` calls
:meth:`FlatKernel.refresh` under its write lock after each, and searches run under its read lock.

Results match :meth:`indexes.storage.faiss.backend.FaissIndex.search`: (scores, docnos) of shape ``(queries, k)``,
``-inf``/``-1`` padded, best first, equal scores by docno, every tie at the cut considered. A score can differ from
FAISS's in the last bit (FAISS adds in another order; its own batched search, BLAS past 20 queries, differs from its
single-query one too).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from indexes.storage.kernels import top_k
from indexes.storage.kernels.docno_flags import row_flags

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; without it flat indexes go through FAISS
    numba = None

QUERY_BLOCK = 16  # queries scored per pass over the rows: each row is read from memory once for all of them
_FLOOR = np.float32(-np.finfo(np.float32).max)  # every finite score; masked rows are -inf
_ALL_ROWS = np.zeros(0, dtype=np.int64)  # no positions picked: every row up to the count


def _scores_py(vectors: np.ndarray, picked: np.ndarray, count: int, queries: np.ndarray, out: np.ndarray) -> None:
    """``out[b, p] = vectors[row] . queries[b]`` for the ``count`` rows ``picked`` (positions, ascending), or the
    first ``count`` rows where ``picked`` is empty.

    Four rows at a time (four independent sums keep more loads in flight: 1M x 384 in 36 instead of 46 ms on one
    core); the last group repeats its last row rather than running other code, so every row's sum comes from the
    same compiled instructions whatever its position, the rows picked beside it or the other queries, and a score
    is the same sharded or not, single or batched (``tests/integration/test_torch_flat.py`` checks it)."""
    dims = vectors.shape[1]
    every = len(picked) == 0
    last = count - 1
    for g in range(0, count, 4):
        p0, p1, p2, p3 = g, min(g + 1, last), min(g + 2, last), min(g + 3, last)
        r0 = p0 if every else picked[p0]
        r1 = p1 if every else picked[p1]
        r2 = p2 if every else picked[p2]
        r3 = p3 if every else picked[p3]
        for b in range(queries.shape[0]):
            a0 = np.float32(0)
            a1 = np.float32(0)
            a2 = np.float32(0)
            a3 = np.float32(0)
            for j in range(dims):
                qj = queries[b, j]
                a0 += vectors[r0, j] * qj
                a1 += vectors[r1, j] * qj
                a2 += vectors[r2, j] * qj
                a3 += vectors[r3, j] * qj
            out[b, p0] = a0
            out[b, p1] = a1
            out[b, p2] = a2
            out[b, p3] = a3


_scores = numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})(_scores_py) if numba is not None else None


def _search_py(vectors: np.ndarray, picked: np.ndarray, count: int, queries: np.ndarray, k: int, docnos: np.ndarray,
               out_scores: np.ndarray, out_docnos: np.ndarray) -> None:
    """Each query's top ``k`` among the rows of :func:`_scores_py` into ``out_*`` (``-inf``/``-1`` past the hits),
    best first, equal scores by docno; one compiled call per search, scoring :data:`QUERY_BLOCK` queries per pass
    over the rows."""
    n = queries.shape[0]
    every = len(picked) == 0
    buffer = np.empty((min(n, QUERY_BLOCK), count), dtype=np.float32)
    for start in range(0, n, QUERY_BLOCK):
        block = queries[start:start + QUERY_BLOCK]
        _scores(vectors, picked, count, block, buffer)
        for b in range(block.shape[0]):
            at, found = top_k.select(buffer[b], k, _FLOOR)
            # ``at`` ascends and rows are in docno order: a stable sort by score puts ties in docno order
            order = np.argsort(-found, kind="mergesort")
            for j in range(min(k, len(order))):
                position = at[order[j]]
                out_scores[start + b, j] = found[order[j]]
                out_docnos[start + b, j] = docnos[position if every else picked[position]]
            for j in range(min(k, len(order)), k):
                out_scores[start + b, j] = -np.inf
                out_docnos[start + b, j] = -1


_search = numba.njit(cache=True, nogil=True)(_search_py) if numba is not None else None


def available() -> bool:
    return _search is not None


def _faiss() -> Any:
    import faiss

    return faiss


def flat_storage(index: Any) -> Any:
    """The ``IndexFlat`` holding an ID-mapped index's vectors as they were given: the index itself (``Flat``) or an
    HNSW graph's storage (``HNSW32``: the exact search of issue 37 reads the graph's own rows); None otherwise."""
    faiss = _faiss()
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexHNSW):
        inner = faiss.downcast_index(inner.storage)
    return inner if isinstance(inner, faiss.IndexFlat) else None


class FlatKernel:
    """The searcher of one ID-mapped ``IndexFlatIP`` (``faiss.IndexIDMap2``), or of the flat storage of an HNSW one
    (:func:`flat_storage`), or of ``rows`` given (vectors and their ascending docnos: an IVF index's reconstructed
    vectors); the caller holds its read lock."""

    dtype_name = "fp32"

    def __init__(self, index: Any, rows: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        if not available():
            raise RuntimeError("the flat kernel needs numba")
        self.dimension = int(index.d)
        self._mask: tuple[Any, int, np.ndarray] | None = None  # (weakref to the last bitmap, rows, its rows' positions)
        self.refresh(index, rows)
        self.search(np.zeros((1, self.dimension), dtype=np.float32), 1)  # compile (or load the cached code) now

    def refresh(self, index: Any, rows: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Take views of ``index``'s memory anew (after an add or a compaction, under the index's write lock; a
        compaction may have rebuilt the index itself)."""
        faiss = _faiss()
        self._index = index
        self._mask = None
        if rows is not None:
            self._views = np.ascontiguousarray(rows[0], dtype=np.float32), np.ascontiguousarray(rows[1], dtype=np.int64)
            return
        storage = flat_storage(index)
        if storage is None:
            raise ValueError("the flat kernel reads a flat index's (or an HNSW graph's flat) storage, or rows given")
        n = int(storage.ntotal)
        if n == 0:
            self._views = np.zeros((0, self.dimension), dtype=np.float32), np.zeros(0, dtype=np.int64)
            return
        vectors = faiss.rev_swig_ptr(storage.get_xb(), n * self.dimension).reshape(n, self.dimension)
        self._views = vectors, faiss.rev_swig_ptr(self._index.id_map.data(), n)

    def _view_rows(self, bitmap: np.ndarray, rows: int, docnos: np.ndarray) -> np.ndarray:
        """The positions, among the first ``rows``, whose docno a view's bitmap keeps; the last answer is cached,
        since a view's bitmap is built once and searched many times."""
        cached = self._mask
        if cached is not None and cached[0]() is bitmap and cached[1] == rows:
            return cached[2]
        picked = np.flatnonzero(row_flags(docnos, np.unpackbits(bitmap, bitorder="little")))
        try:
            self._mask = (weakref.ref(bitmap), rows, picked)
        except TypeError:
            self._mask = None
        return picked

    def _run(self, queries: np.ndarray, k: int, picked: np.ndarray | None, rows: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, k)
        count = rows if picked is None else len(picked)
        if not (count and len(queries)):
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        out_scores = np.empty((len(queries), k), np.float32)  # the kernel pads past the hits
        out_docnos = np.empty((len(queries), k), np.int64)
        _search(self._views[0], _ALL_ROWS if picked is None else picked, count, queries, k,  # type: ignore[misc]
                self._views[1], out_scores, out_docnos)
        return out_scores, out_docnos

    def search(self, queries: np.ndarray, k: int, bound: int | None = None,
               bitmap: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` (scores, docnos; -1 pads) among docnos below ``bound`` whose ``bitmap`` bit is set."""
        docnos = self._views[1]
        rows = len(docnos) if bound is None else int(np.searchsorted(docnos, bound, side="left"))
        picked = self._view_rows(bitmap, rows, docnos[:rows]) if bitmap is not None else None
        return self._run(queries, k, picked, rows)

    def search_allowed(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` among the docnos whose ``allowed`` bool is set (a metadata filter's matches in one view): only
        those rows are read, so a filter that keeps 1% of the documents reads 1% of the vectors."""
        docnos = self._views[1]
        rows = len(docnos)
        if rows and int(docnos[-1]) == rows - 1 and len(allowed) >= rows:  # no gaps: a docno is its row
            picked = np.flatnonzero(allowed[:rows])
        else:
            picked = np.flatnonzero(row_flags(docnos, allowed))
        return self._run(queries, k, picked, rows)
