"""Anserini's order of one document store's hits, compiled (numba), for the in-memory SPLADE search.

Why: after the matrix kernel, ranking its hits as Anserini does (score descending, then id; scores through the
``ScoreTiesAdjusterReranker``) took as long again in Python: tuples, two sorts, the tie rounding in numpy. Here the
sort and the rounding are one compiled call. Ids cannot be compared in it, so it sorts ties by docno and the caller
re-sorts only runs of equal scores by id (:func:`indexes.storage.lucene.direct.anserini_run_arrays`). The rounded
scores depend only on the sorted scores, never on which document holds which place in a tie, so they are right
whatever order the caller gives the tied documents.

The rounding is Java's loop, step by step, in IEEE double and float32 arithmetic with no fast-math, so it equals
:func:`indexes.storage.lucene.direct.tie_adjusted` to the bit (``tests/unit/test_anserini_order.py`` checks it).
"""

from __future__ import annotations

import math

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; callers fall back to Python without it
    numba = None


def _ordered_py(found: np.ndarray, docnos: np.ndarray, k: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(docnos, scores) of every hit, score descending then docno ascending; the first ``min(k, hits)`` scores
    rounded as Anserini rounds them (float32); and the runs of equal scores that start before place ``k``, as
    (start, end) rows: the places whose documents the caller orders by id."""
    n = found.size
    order = np.argsort(docnos, kind="mergesort")
    order = order[np.argsort(-found[order], kind="mergesort")]
    ranked_docnos = docnos[order]
    ranked = found[order]
    take = min(k, n)
    adjusted = np.empty(take, dtype=np.float32)
    for i in range(take):
        adjusted[i] = np.float32(math.floor(np.float64(ranked[i]) * 1e4 + 0.5) / 1e4)
    dup = 0
    for i in range(1, take):
        if np.float64(adjusted[i - 1] - adjusted[i]) > 1e-4:
            dup = 0
        else:
            dup += 1
            adjusted[i] = np.float32(np.float64(adjusted[i]) - 1e-6 * dup)
    ties = np.empty((take // 2 + 1, 2), dtype=np.int64)  # a run of ties holds two places or more
    count = 0
    i = 0
    while i < take:
        j = i + 1
        while j < n and ranked[j] == ranked[i]:
            j += 1
        if j - i > 1:
            ties[count, 0], ties[count, 1] = i, j
            count += 1
        i = j
    return ranked_docnos, ranked, adjusted, ties[:count].copy()


ordered = numba.njit(cache=True, nogil=True)(_ordered_py) if numba is not None else None


_warmed = False


def warm() -> None:
    """Compile (or load the cached machine code) now, not in a first query (a compile takes seconds); once per
    process, since every view of a live index makes a matrix search."""
    global _warmed
    if ordered is not None and not _warmed:
        ordered(np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64), 1)
        _warmed = True
