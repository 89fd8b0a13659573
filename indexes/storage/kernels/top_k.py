"""The top ``k`` of a score array and every tie at the cut, compiled (numba), for the in-memory searches.

Why: partitioning a million scores took 0.6 ms, and most of them cannot be in the top ``k``. Past ``k`` blocks of
:data:`BLOCK` scores, the ``k``-th largest block maximum is a score the ``k``-th best reaches (``k`` blocks each
hold one that high), so only the blocks whose maximum reaches it are looked at. Used inside the SPLADE matrix's
scoring kernel (:mod:`indexes.storage.sparse.impact_matrix`) and the flat dense kernel (:mod:`indexes.storage.faiss.flat_kernel`).

Numba caches those kernels' machine code keyed on their own files only: after editing this one, touch them (or
delete their ``__pycache__/*.nbi`` files), or they keep the old ``select``. An installed upgrade rewrites all three.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; callers fall back to numpy without it
    numba = None

BLOCK = 1024  # scores per block in the bound, at most: fewer for short arrays, so that there are 8k blocks


def block_size(n: int, k: int) -> int:
    """Blocks of up to :data:`BLOCK` scores, at least 8; about ``8 k`` of them where ``n`` allows (Cranfield's
    1,398 scores at k = 10: 82 blocks of 17, so a few hundred scores are looked at instead of all)."""
    return min(BLOCK, max(8, n // (8 * max(k, 1))))


# Up to SMALL scores and SMALL_K hits, one pass keeping the best k in order beats the block bound (Cranfield, k = 10:
# 2 us, not 5); its insertions cost up to k moves each, so a deep k keeps the bound.
SMALL, SMALL_K = 2048, 32


def _select_small_py(scores: np.ndarray, k: int, floor: np.float32) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_select_py` for short arrays: the best ``k`` kept sorted in a buffer in one pass, then every score at
    or above the ``k``-th (or ``floor``, with fewer hits) taken in a second."""
    n = len(scores)
    best = np.empty(k, dtype=np.float32)
    held = 0
    for r in range(n):
        s = scores[r]
        if not s >= floor:  # below the floor, or NaN
            continue
        if held < k:
            j = held
            held += 1
        elif s > best[k - 1]:
            j = k - 1
        else:
            continue
        while j > 0 and best[j - 1] < s:
            best[j] = best[j - 1]
            j -= 1
        best[j] = s
    cut = best[k - 1] if held == k else floor
    count = 0
    for r in range(n):
        if scores[r] >= cut:
            count += 1
    rows = np.empty(count, dtype=np.int64)
    found = np.empty(count, dtype=np.float32)
    at = 0
    for r in range(n):
        if scores[r] >= cut:
            rows[at], found[at] = r, scores[r]
            at += 1
    return rows, found


def _select_py(scores: np.ndarray, k: int, floor: np.float32) -> tuple[np.ndarray, np.ndarray]:
    """(positions, scores) of the top ``k`` scores at or above ``floor``, ties at the cut included, in no set order."""
    n = len(scores)
    if n <= SMALL and 1 <= k <= SMALL_K:
        return _select_small(scores, k, floor)
    bound = floor
    size = _block_size(n, k)
    blocks = n // size
    if blocks > k:
        maxima = np.empty(blocks, dtype=np.float32)
        for b in range(blocks):
            maxima[b] = scores[b * size:(b + 1) * size].max()
        bound = max(bound, np.partition(maxima, blocks - k)[blocks - k])
    else:
        maxima = np.empty(0, dtype=np.float32)
    count = 0
    for b in range(blocks + 1):
        if b < len(maxima) and maxima[b] < bound:
            continue
        for r in range(b * size, min(n, (b + 1) * size)):
            if scores[r] >= bound:
                count += 1
    rows = np.empty(count, dtype=np.int64)
    found = np.empty(count, dtype=np.float32)
    at = 0
    for b in range(blocks + 1):
        if b < len(maxima) and maxima[b] < bound:
            continue
        for r in range(b * size, min(n, (b + 1) * size)):
            if scores[r] >= bound:
                rows[at], found[at] = r, scores[r]
                at += 1
    if count > k:
        cut = np.partition(found.copy(), count - k)[count - k]
        keep = found >= cut
        return rows[keep], found[keep]
    return rows, found


def select_numpy(scores: np.ndarray, k: int, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`select`'s answer in numpy calls (where numba is missing)."""
    bound = np.float32(floor)
    size = block_size(len(scores), k)
    blocks = len(scores) // size
    if blocks > k:
        maxima = scores[: blocks * size].reshape(blocks, size).max(axis=1)
        bound = max(bound, np.partition(maxima, blocks - k)[blocks - k])
    rows = np.flatnonzero(scores >= bound)
    found = scores[rows]
    if len(rows) > k:
        keep = found >= np.partition(found, len(found) - k)[len(found) - k]
        rows, found = rows[keep], found[keep]
    return rows.astype(np.int64), found


_block_size = numba.njit(cache=True)(block_size) if numba is not None else block_size
_select_small = numba.njit(cache=True, nogil=True)(_select_small_py) if numba is not None else _select_small_py
select = numba.njit(cache=True, nogil=True)(_select_py) if numba is not None else None
