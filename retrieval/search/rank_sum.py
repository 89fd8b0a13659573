"""The arithmetic of fusion over runs of one document store, compiled (numba): group the runs' docnos, add each
document's shares, pick the page.

Why: fusing two lists of 100 took 54 us in dict loops on Cranfield, as long as either retriever's search; the same
steps in a dozen numpy calls still cost 36 us inside a request, mostly in the calls' fixed costs. This is one call
that takes the runs as they are (tuples of arrays: nothing is concatenated first) and groups docnos in a small hash
table rather than by sorting them. The sums are made exactly as :func:`retrieval.search.fusion._fused` makes them
(from 0, in retriever order), so both paths give the same scores to the bit.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; the same steps run as plain Python without it
    numba = None


def _rank_sum_py(docnos: tuple[np.ndarray, ...], shares: tuple[np.ndarray, ...], missing: tuple[float, ...],
                 limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run ``r`` is ``docnos[r]`` (unique within the run, in rank order) with ``shares[r][i]`` at rank ``i + 1``
    (``shares[r]`` may be longer), and adds ``missing[r]`` to a document it lacks. Returns (totals, ranks, chosen):
    each document's fused score (documents in order of first appearance), its 1-based rank in each run (0: not
    there; runs x documents) and the documents of the top ``limit`` with every tie at the cut (ascending; all of
    them when ``limit`` is at least their number)."""
    n = 0
    for run in docnos:
        n += run.size
    size = 16
    while size < 2 * n:
        size *= 2
    keys = np.full(size, -1, dtype=np.int64)  # open addressing: docno -> its document number
    slots = np.empty(size, dtype=np.int64)
    firsts = np.empty(n, dtype=np.int64)  # per entry of every run in turn: its document
    m = 0
    at = 0
    for run in docnos:
        for i in range(run.size):
            d = run[i]
            h = (d * 2654435761) & (size - 1)  # Knuth's multiplier: consecutive docnos spread
            while keys[h] != -1 and keys[h] != d:
                h = (h + 1) & (size - 1)
            if keys[h] == -1:
                keys[h] = d
                slots[h] = m
                m += 1
            firsts[at] = slots[h]
            at += 1
    ranks = np.zeros((len(docnos), m), dtype=np.int64)
    totals = np.zeros(m, dtype=np.float64)
    at = 0
    for r in range(len(docnos)):
        for i in range(docnos[r].size):
            ranks[r, firsts[at]] = i + 1
            at += 1
        share, absent = shares[r], missing[r]
        for j in range(m):
            rank = ranks[r, j]
            totals[j] = totals[j] + (share[rank - 1] if rank else absent)
    if limit >= m:
        return totals, ranks, np.arange(m)
    cut = np.partition(totals, m - limit)[m - limit]
    count = 0
    for j in range(m):
        if totals[j] >= cut:
            count += 1
    chosen = np.empty(count, dtype=np.int64)
    at = 0
    for j in range(m):
        if totals[j] >= cut:
            chosen[at] = j
            at += 1
    return totals, ranks, chosen


rank_sum = numba.njit(cache=True, nogil=True)(_rank_sum_py) if numba is not None else _rank_sum_py


_warmed: set[int] = set()


def warm(runs: int) -> None:
    """Compile (or load the cached machine code of) the kernel for fusions of 2 to ``runs`` runs now, not in a
    first request: compiling one takes seconds (each number of runs is its own specialization)."""
    for arity in range(2, runs + 1):
        if arity not in _warmed:
            empty = tuple(np.zeros(0, dtype=np.int64) for _ in range(arity))
            rank_sum(empty, tuple(np.zeros(0, dtype=np.float64) for _ in range(arity)), (0.0,) * arity, 1)
            _warmed.add(arity)
