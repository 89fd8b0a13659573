"""The exact scoring pass over one block of the SPLADE matrix, compiled (numba), and the same pass with the hits
ranked as Anserini ranks them in the same call (:func:`ranked_block`: one compiled call per query instead of two,
which on Cranfield cost as much as the scoring; eval/bench/README.md, "Approximate SPLADE").

Numba caches these kernels' machine code keyed on this file and :mod:`indexes.storage.kernels.top_k` (see there).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

try:  # the scoring loop compiled; without numba, scipy's sparse product (about 1.5x slower at 1M documents)
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; kept importable without it
    numba = None

from indexes.storage.kernels import top_k
from indexes.storage.lucene import anserini_order

_TINY = np.float32(np.finfo(np.float32).tiny)  # a hit scores above 0


def _block_top_py(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, rows: int, columns: np.ndarray,
                  weights: np.ndarray, mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One block's top ``k`` (row, score) and every tie at the cut, in one compiled call (a query on Cranfield
    spent more in a dozen numpy calls around the scoring than in the scoring).

    Scores: ``weight x impact`` added over the postings of ``columns`` (ones outside the block are skipped);
    products and sums of integers below 2**24 are exact in float32, so the order of the additions cannot change a
    score. ``mask`` (one bool per row, or empty for all) drops rows before the cut (:func:`top_k.select`).
    """
    scores = np.zeros(rows, dtype=np.float32)
    width = len(indptr) - 1
    for j in range(len(columns)):
        c, w = columns[j], weights[j]
        if c < 0 or c >= width:
            continue
        at, end = indptr[c], indptr[c + 1]
        # Four postings at a time, loads before stores: a column's rows are distinct (a document's impacts are one
        # {term: impact} map), so the four updates are independent, which the compiler cannot know (Cranfield:
        # 17.5 -> 14.1 us a query). float32 math: numba would widen uint16 to float64.
        while at + 4 <= end:
            r0, r1, r2, r3 = indices[at], indices[at + 1], indices[at + 2], indices[at + 3]
            s0 = scores[r0] + np.float32(data[at]) * w
            s1 = scores[r1] + np.float32(data[at + 1]) * w
            s2 = scores[r2] + np.float32(data[at + 2]) * w
            s3 = scores[r3] + np.float32(data[at + 3]) * w
            scores[r0], scores[r1], scores[r2], scores[r3] = s0, s1, s2, s3
            at += 4
        while at < end:
            scores[indices[at]] += np.float32(data[at]) * w
            at += 1
    if len(mask):
        for r in range(rows):
            if not mask[r]:
                scores[r] = 0
    return top_k.select(scores, k, _TINY)


def _block_top_numpy(block: sparse.csc_matrix, columns: np.ndarray, weights: np.ndarray, mask: np.ndarray,
                     k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_block_top_py`'s answer through scipy and numpy, where numba is missing (about 1.5x slower at 1M
    documents)."""
    inside = (columns >= 0) & (columns < block.shape[1])
    scores = np.asarray(block[:, columns[inside]] @ weights[inside], dtype=np.float32).ravel()
    if len(mask):
        scores = np.where(mask, scores, np.float32(0))
    return top_k.select_numpy(scores, k, _TINY)


_block_top = numba.njit(cache=True, nogil=True)(_block_top_py) if numba is not None else None


def block_top(block: sparse.csc_matrix, columns: np.ndarray, weights: np.ndarray, mask: np.ndarray | None,
              k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` rows of one block for a query (``columns`` of the block, -1 for a term it lacks, with
    ``weights``), ties at the cut included, as (rows, float32 scores) in no set order."""
    mask = _NO_MASK if mask is None else mask
    if _block_top is None:
        return _block_top_numpy(block, columns, weights, mask, k)
    return _block_top(block.indptr, block.indices, block.data, block.shape[0], columns, weights, mask, k)  # type: ignore[no-any-return]


_NO_MASK = np.zeros(0, dtype=np.bool_)


def _ranked_block_py(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, rows: int, columns: np.ndarray,
                     weights: np.ndarray, mask: np.ndarray, k: int, docnos: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_block_top_py` and :func:`indexes.storage.lucene.anserini_order.ordered` of its hits (on ``docnos``,
    the block's rows' docnos) in one call: ranked docnos, scores, Anserini's rounded scores, runs of ties."""
    found_rows, found = _block_top(indptr, indices, data, rows, columns, weights, mask, k)
    return anserini_order.ordered(found, docnos[found_rows], k)  # type: ignore[no-any-return,misc]


_ranked_block = numba.njit(cache=True, nogil=True)(_ranked_block_py) if numba is not None else None


def ranked_block(block: sparse.csc_matrix, docnos: np.ndarray, columns: np.ndarray, weights: np.ndarray,
                 mask: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The block's top ``k`` for a query, ranked (:func:`_ranked_block_py`); None without numba (rank with
    :func:`block_top` and the caller's Python path)."""
    if _ranked_block is None or anserini_order.ordered is None:
        return None
    return _ranked_block(block.indptr, block.indices, block.data, block.shape[0], columns, weights,  # type: ignore[no-any-return]
                         _NO_MASK if mask is None else mask, k, docnos)
