"""Approximate learned-sparse search: the impact matrix's rows grouped into clusters of similar documents.

Why: the exact search scores every posting of every query term (1.8M postings a Cranfield query at 100,000
resampled documents, 2.25 ms; 13.5 ms at a million), while a query's top 10 sit in a few dozen groups of similar
documents. Candidates measured on the 100k resampled corpus (eval/bench/README.md, "Approximate SPLADE"): static
pruning of each posting list to its heaviest impacts with exact re-scoring (recall@10 0.63-0.98 at 1-13 ms), block-max
pruning over blocks of reordered documents (bounds too loose: 0.99 only after scoring most blocks), a Seismic-style
index of pruned, clustered posting lists with summaries (pyseismic-lsr itself: 0.995 at 0.23 ms, but 6 minutes to
build at 100k), and this one, an inverted file over clusters, which reached 0.986 at about 0.1 ms and builds in
seconds. It picks what to score by cluster, and scores it exactly.

Build (:func:`build`, numba): spherical k-means over each row's :data:`ROW_TERMS` heaviest impacts (L2-normalized)
into clusters of about :data:`CLUSTER_SIZE` rows; each cluster's centroid for searching is its rows' mean impact
vector cut to its :data:`CENTROID_TERMS` heaviest terms. The matrix keeps its rows in cluster order, so a cluster
is one contiguous range of every posting list.

Search (:meth:`Clusters.top`): score every centroid (a small inverted index), take the ``probes`` best clusters, and
score their rows term by term through the matrix's own postings: a dense table gives each frequent term's postings
per cluster (a binary search finds the rest). Scores are exact dot products, as the exhaustive search computes
them, so a hit's score never changes with ``probes``; only which rows are looked at does. Recall against the
exact search is measured, not assumed (:mod:`indexes.kinds.splade` tunes ``probes`` at build and with
``hybrid index tune``).

File: ``matrix/clusters.npz`` holds the rows' docnos in cluster order, the cluster boundaries, the centroids (terms
as strings) and how many matrix parts it covers; written once (temporary file, fsync, rename). Rows of parts written
after it (live writes) are searched exactly beside it until a checkpoint folds them in (:func:`should_fold`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; without it the matrix searches exactly
    numba = None

from indexes.storage.kernels import top_k

FILE = "clusters.npz"
CLUSTER_SIZE = 32  # rows per cluster, on average
ROW_TERMS = 16  # each row's heaviest impacts that k-means compares
KMEANS_TERMS = 16  # terms a k-means centroid keeps
KMEANS_POSTINGS = 128  # centroids a term's k-means posting list keeps (its heaviest): bounds an assignment's cost
KMEANS_ITERATIONS = 3
CENTROID_TERMS = 128  # terms a searched centroid keeps (its heaviest mean impacts)
SEED = 13
DENSE_SHARE = 8  # a term in at least 1/DENSE_SHARE of the clusters gets a row of the offset table
TABLE_SHARE = 4  # the offset table holds at most nnz/TABLE_SHARE entries (4 bytes each)
FOLD_MIN_ROWS = 5_000  # a checkpoint re-clusters once the rows outside the clusters pass this many
FOLD_SHARE = 0.1  # ... and this share of the clustered rows
_TINY = np.float32(np.finfo(np.float32).tiny)


def _jit(fn: Any) -> Any:
    return numba.njit(cache=True, nogil=True)(fn) if numba is not None else fn


# --- build ------------------------------------------------------------------------------------------------


def _row_top_py(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, m: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's ``m`` heaviest impacts (first ones among equals), L2-normalized, as CSR."""
    n = len(indptr) - 1
    ptr = np.zeros(n + 1, dtype=np.int64)
    for r in range(n):
        ptr[r + 1] = ptr[r] + min(m, indptr[r + 1] - indptr[r])
    terms = np.empty(ptr[n], dtype=np.int32)
    weights = np.empty(ptr[n], dtype=np.float32)
    for r in range(n):
        a, e = indptr[r], indptr[r + 1]
        want = ptr[r + 1] - ptr[r]
        if want == 0:
            continue
        values = data[a:e].astype(np.float32)
        cut = np.float32(-1.0)
        if e - a > want:
            cut = np.partition(values, e - a - want)[e - a - want]
        above = 0
        for i in range(e - a):
            if values[i] > cut:
                above += 1
        equal_left = want - above  # how many rows at exactly the cut still fit
        at = ptr[r]
        norm = 0.0
        for i in range(e - a):
            v = values[i]
            if v > cut or (v == cut and equal_left > 0):
                if v == cut:
                    equal_left -= 1
                terms[at], weights[at] = indices[a + i], v
                norm += v * v
                at += 1
        norm = np.sqrt(norm)
        if norm > 0:
            for i in range(ptr[r], ptr[r + 1]):
                weights[i] = np.float32(weights[i] / norm)
    return ptr, terms, weights


def _centroids_py(ptr: np.ndarray, terms: np.ndarray, weights: np.ndarray, labels: np.ndarray, clusters: int,
                  width: int, keep: int, normalize: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each cluster's rows summed (their mean, unless ``normalize``: then scaled to unit length) and cut to its
    ``keep`` heaviest terms, as CSR; labels out of range (unassigned rows) count for no cluster."""
    order = np.argsort(labels, kind="mergesort")
    sizes = np.zeros(clusters, dtype=np.int64)
    for r in range(len(labels)):
        if 0 <= labels[r] < clusters:
            sizes[labels[r]] += 1
    scratch = np.zeros(width, dtype=np.float32)
    touched = np.empty(width, dtype=np.int32)
    cptr = np.zeros(clusters + 1, dtype=np.int64)
    cterms = np.empty(clusters * keep, dtype=np.int32)
    cweights = np.empty(clusters * keep, dtype=np.float32)
    at = 0
    i = 0
    n = len(order)
    while i < n and labels[order[i]] < 0:
        i += 1
    for c in range(clusters):
        held = 0
        while i < n and labels[order[i]] == c:
            r = order[i]
            for p in range(ptr[r], ptr[r + 1]):
                t = terms[p]
                if scratch[t] == 0:
                    touched[held] = t
                    held += 1
                scratch[t] += weights[p]
            i += 1
        if held:
            values = np.empty(held, dtype=np.float32)
            for j in range(held):
                values[j] = scratch[touched[j]]
            chosen = np.argsort(-values, kind="mergesort")[:keep]
            scale = 0.0
            if normalize:
                for j in chosen:
                    scale += values[j] * values[j]
                scale = np.sqrt(scale)
            else:
                scale = sizes[c]
            for j in chosen:
                cterms[at], cweights[at] = touched[j], np.float32(values[j] / scale)
                at += 1
            for j in range(held):
                scratch[touched[j]] = 0
        cptr[c + 1] = at
    return cptr, cterms[:at].copy(), cweights[:at].copy()


def _invert_py(cptr: np.ndarray, cterms: np.ndarray, cweights: np.ndarray, width: int, keep: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroids (CSR) as term -> (centroid, weight) postings, each term keeping its ``keep`` heaviest."""
    clusters = len(cptr) - 1
    counts = np.zeros(width + 1, dtype=np.int64)
    for p in range(cptr[clusters]):
        counts[cterms[p] + 1] += 1
    full = np.cumsum(counts)
    fill = full[:-1].copy()
    ids = np.empty(cptr[clusters], dtype=np.int32)
    values = np.empty(cptr[clusters], dtype=np.float32)
    for c in range(clusters):
        for p in range(cptr[c], cptr[c + 1]):
            t = cterms[p]
            ids[fill[t]], values[fill[t]] = c, cweights[p]
            fill[t] += 1
    iptr = np.zeros(width + 1, dtype=np.int64)
    for t in range(width):
        iptr[t + 1] = iptr[t] + min(keep, full[t + 1] - full[t])
    out_ids = np.empty(iptr[width], dtype=np.int32)
    out_values = np.empty(iptr[width], dtype=np.float32)
    for t in range(width):
        a, e = full[t], full[t + 1]
        if e - a <= keep:
            out_ids[iptr[t]:iptr[t + 1]] = ids[a:e]
            out_values[iptr[t]:iptr[t + 1]] = values[a:e]
        else:
            chosen = np.argsort(-values[a:e], kind="mergesort")[:keep]
            out_ids[iptr[t]:iptr[t + 1]] = ids[a:e][chosen]
            out_values[iptr[t]:iptr[t + 1]] = values[a:e][chosen]
    return iptr, out_ids, out_values


def _assign_py(ptr: np.ndarray, terms: np.ndarray, weights: np.ndarray, iptr: np.ndarray, ids: np.ndarray,
               values: np.ndarray, clusters: int) -> np.ndarray:
    """Each row's nearest centroid by dot product (through the centroids' postings; -1: shares no term with any)."""
    n = len(ptr) - 1
    acc = np.zeros(clusters, dtype=np.float32)
    touched = np.empty(clusters, dtype=np.int32)
    labels = np.empty(n, dtype=np.int32)
    for r in range(n):
        held = 0
        for p in range(ptr[r], ptr[r + 1]):
            t, w = terms[p], weights[p]
            for q in range(iptr[t], iptr[t + 1]):
                c = ids[q]
                if acc[c] == 0:
                    touched[held] = c
                    held += 1
                acc[c] += w * values[q]
        best, best_score = -1, np.float32(0)
        for j in range(held):
            c = touched[j]
            if acc[c] > best_score or (acc[c] == best_score and best >= 0 and c < best):
                best, best_score = c, acc[c]
            acc[c] = 0
        labels[r] = best
    return labels


_row_top = _jit(_row_top_py)
_centroids = _jit(_centroids_py)
_invert = _jit(_invert_py)
_assign = _jit(_assign_py)


def kmeans(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, width: int, clusters: int,
           seed: int = SEED) -> np.ndarray:
    """Cluster labels (0..clusters-1, every row one) of the CSR rows: spherical k-means on each row's
    :data:`ROW_TERMS` heaviest impacts, seeded from random rows; each term's centroid postings keep its
    :data:`KMEANS_POSTINGS` heaviest, so an assignment costs at most ``ROW_TERMS x KMEANS_POSTINGS`` additions."""
    rows = len(indptr) - 1
    ptr, terms, weights = _row_top(indptr, indices, data, ROW_TERMS)
    labels = np.full(rows, -1, dtype=np.int32)
    labels[np.random.default_rng(seed).choice(rows, clusters, replace=False)] = np.arange(clusters, dtype=np.int32)
    for _ in range(KMEANS_ITERATIONS):
        cptr, cterms, cweights = _centroids(ptr, terms, weights, labels, clusters, width, KMEANS_TERMS, True)
        iptr, ids, values = _invert(cptr, cterms, cweights, width, KMEANS_POSTINGS)
        labels = _assign(ptr, terms, weights, iptr, ids, values, clusters)
    unassigned = labels < 0  # rows sharing no term with any centroid: one cluster of their own
    labels[unassigned] = clusters
    _, labels = np.unique(labels, return_inverse=True)  # empty clusters dropped, labels dense
    return labels.astype(np.int32)


@dataclass
class Layout:
    """What :func:`build` decides: the rows in cluster order and the clusters' centroids (CSR over columns)."""

    order: np.ndarray  # row numbers (of the input) in cluster order
    starts: np.ndarray  # cluster c holds positions starts[c]:starts[c+1]
    cptr: np.ndarray
    cterms: np.ndarray
    cweights: np.ndarray


def build(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, width: int, size: int = CLUSTER_SIZE,
          seed: int = SEED) -> Layout:
    """Clusters of about ``size`` rows over a CSR impact matrix (``width`` columns) and their centroids."""
    rows = len(indptr) - 1
    clusters = max(1, min(rows, round(rows / size)))
    labels = kmeans(indptr, indices, data, width, clusters, seed) if clusters > 1 else np.zeros(rows, np.int32)
    order = np.argsort(labels, kind="mergesort").astype(np.int64)
    starts = np.zeros(int(labels.max(initial=-1)) + 2, dtype=np.int64)
    starts[1:] = np.cumsum(np.bincount(labels, minlength=len(starts) - 1))
    ranks = np.empty(rows, dtype=np.int32)
    ranks[order] = np.arange(rows, dtype=np.int32)
    cluster_of = np.repeat(np.arange(len(starts) - 1, dtype=np.int32), np.diff(starts))[ranks]
    cptr, cterms, cweights = _centroids(indptr, indices, data.astype(np.float32), cluster_of, len(starts) - 1, width,
                                        CENTROID_TERMS, False)
    return Layout(order, starts, cptr, cterms, cweights)


# --- the file ------------------------------------------------------------------------------------------------


def write(folder: Path, layout: Layout, docnos: np.ndarray, vocab: list[str], parts: int, write_file: Any) -> str:
    """``matrix/clusters.npz`` for ``layout`` over rows ``docnos`` (input order) covering the first ``parts`` parts;
    ``write_file(path, writer)`` writes atomically. Returns the file name."""
    used = np.unique(layout.cterms)
    local = np.full(max(len(vocab), 1), -1, dtype=np.int64)
    local[used] = np.arange(len(used))
    names = np.array([vocab[t] for t in used.tolist()], dtype=str) if len(used) else np.zeros(0, dtype="<U1")
    meta = json.dumps({"parts": parts, "cluster_size": CLUSTER_SIZE, "centroid_terms": CENTROID_TERMS,
                       "seed": SEED})
    write_file(folder / FILE, lambda h: np.savez(
        h, docnos=np.asarray(docnos, dtype=np.int64)[layout.order], starts=layout.starts, cptr=layout.cptr,
        cterms=local[layout.cterms].astype(np.int32), cweights=layout.cweights, vocab=names, meta=np.array(meta)))
    return FILE


@dataclass
class Stored:
    """A clusters file as read: docnos in cluster order, boundaries, centroids with string terms."""

    docnos: np.ndarray
    starts: np.ndarray
    cptr: np.ndarray
    cterms: np.ndarray
    cweights: np.ndarray
    vocab: np.ndarray
    parts: int


def read(folder: Path) -> Stored | None:
    path = folder / FILE
    if not path.exists():
        return None
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        return Stored(data["docnos"], data["starts"], data["cptr"], data["cterms"], data["cweights"], data["vocab"],
                      int(meta["parts"]))


def should_fold(clustered: int, outside: int) -> bool:
    """Whether a checkpoint re-clusters: rows searched exactly beside the clusters past both bounds."""
    return outside >= FOLD_MIN_ROWS and outside >= FOLD_SHARE * clustered


# --- searching -----------------------------------------------------------------------------------------------


def _offsets_py(indptr: np.ndarray, indices: np.ndarray, starts: np.ndarray, dense_min: int, budget: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """For each term in at least ``dense_min`` clusters (most clusters first, up to ``budget`` entries), the offset
    of its first posting in every cluster (relative to the term's first posting); -1 rows for the others."""
    width = len(indptr) - 1
    clusters = len(starts) - 1
    spread = np.zeros(width, dtype=np.int64)
    for t in range(width):
        last = -1
        at = 0  # the cluster holding indices[p], walked forward
        for p in range(indptr[t], indptr[t + 1]):
            while starts[at + 1] <= indices[p]:
                at += 1
            if at != last:
                spread[t] += 1
                last = at
    order = np.argsort(-spread, kind="mergesort")
    dense = np.full(width, -1, dtype=np.int32)
    rows = 0
    for t in order:
        if spread[t] < dense_min or (rows + 1) * (clusters + 1) > budget:
            break
        dense[t] = rows
        rows += 1
    table = np.empty((rows, clusters + 1), dtype=np.int32)
    for t in range(width):
        r = dense[t]
        if r < 0:
            continue
        a, e = indptr[t], indptr[t + 1]
        p = a
        for c in range(clusters + 1):
            s = starts[c]
            while p < e and indices[p] < s:
                p += 1
            table[r, c] = p - a
    return dense, table


def _approx_top_py(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, starts: np.ndarray,
                   dense: np.ndarray, table: np.ndarray, iptr: np.ndarray, ids: np.ndarray, values: np.ndarray,
                   columns: np.ndarray, weights: np.ndarray, mask: np.ndarray, k: int, probes: int
                   ) -> tuple[np.ndarray, np.ndarray, int]:
    """(positions, float32 scores) of the top ``k`` rows among the ``probes`` clusters whose centroids score best,
    every tie at the cut included, in no set order; and how many rows were scored.

    Clusters are taken by centroid score (those sharing no term with the query after the others, lowest first);
    their rows are scored term by term in query order, as the exhaustive kernel adds them, so scores are equal to
    the bit. ``mask`` (one bool per position, or empty) drops rows before the cut."""
    width = len(indptr) - 1
    clusters = len(starts) - 1
    score = np.zeros(clusters, dtype=np.float32)
    for j in range(len(columns)):
        c = columns[j]
        if c < 0 or c >= width:
            continue
        w = weights[j]
        for p in range(iptr[c], iptr[c + 1]):
            score[ids[p]] += w * values[p]
    chosen, _ = top_k.select(score, probes, _TINY)
    if len(chosen) < probes:  # fewer clusters share a term with the query: fill up with the first others
        extra = np.empty(min(probes, clusters) - len(chosen), dtype=np.int64)
        held = 0
        for c in range(clusters):
            if held == len(extra):
                break
            if not score[c] >= _TINY:
                extra[held] = c
                held += 1
        chosen = np.concatenate((chosen, extra[:held]))
    chosen = np.sort(chosen)
    picked = len(chosen)
    base = np.empty(picked + 1, dtype=np.int64)
    base[0] = 0
    for i in range(picked):
        base[i + 1] = base[i] + starts[chosen[i] + 1] - starts[chosen[i]]
    scores = np.zeros(base[picked], dtype=np.float32)
    for j in range(len(columns)):
        c = columns[j]
        if c < 0 or c >= width:
            continue
        a, e = indptr[c], indptr[c + 1]
        if a == e:
            continue
        w = weights[j]
        row = dense[c]
        lo = a
        for i in range(picked):
            cl = chosen[i]
            shift = base[i] - starts[cl]
            if row >= 0:
                p, end = a + table[row, cl], a + table[row, cl + 1]
            else:  # the first posting at or past the cluster's start, searched from the last cluster's end
                first, x, y = starts[cl], lo, e
                while x < y:
                    h = (x + y) >> 1
                    if indices[h] < first:
                        x = h + 1
                    else:
                        y = h
                p, end = x, x
                while end < e and indices[end] < starts[cl + 1]:
                    end += 1
                lo = end
            while p < end:
                scores[shift + indices[p]] += np.float32(data[p]) * w
                p += 1
    if len(mask):
        for i in range(picked):
            cl = chosen[i]
            for pos in range(starts[cl], starts[cl + 1]):
                if not mask[pos]:
                    scores[base[i] + pos - starts[cl]] = 0
    found_at, found = top_k.select(scores, k, _TINY)
    positions = np.empty(len(found_at), dtype=np.int64)
    for x in range(len(found_at)):
        at = found_at[x]
        i = np.searchsorted(base, at, side="right") - 1
        positions[x] = starts[chosen[i]] + at - base[i]
    return positions, found, int(base[picked])


_offsets = _jit(_offsets_py)
_approx_top = _jit(_approx_top_py) if numba is not None else None


class Clusters:
    """The clusters of one matrix block, ready to search: the block's rows are in cluster order (a CSC over
    positions), ``starts`` bounds each cluster, and the centroids are postings over the block's columns."""

    def __init__(self, block: Any, starts: np.ndarray, cptr: np.ndarray, cterms: np.ndarray,
                 cweights: np.ndarray) -> None:
        width = block.shape[1]
        self.starts = np.ascontiguousarray(starts, dtype=np.int64)
        self.count = len(starts) - 1
        self.iptr, self.ids, self.values = _invert(cptr, cterms.astype(np.int32), cweights.astype(np.float32), width,
                                                   self.count)
        dense_min = max(1, self.count // DENSE_SHARE)
        self.dense, self.table = _offsets(block.indptr, block.indices, self.starts, dense_min,
                                          max(block.nnz // TABLE_SHARE, self.count + 1))

    @property
    def memory_bytes(self) -> int:
        return int(self.table.nbytes + self.iptr.nbytes + self.ids.nbytes + self.values.nbytes + self.dense.nbytes)

    def top(self, block: Any, columns: np.ndarray, weights: np.ndarray, mask: np.ndarray, k: int, probes: int
            ) -> tuple[np.ndarray, np.ndarray, int]:
        """:func:`_approx_top` on ``block`` (the matrix block these clusters order)."""
        return _approx_top(block.indptr, block.indices, block.data, self.starts, self.dense,  # type: ignore[no-any-return,misc]
                           self.table, self.iptr, self.ids, self.values, columns, weights, mask, k, probes)


def available() -> bool:
    """Whether approximate search can run here (it is compiled; without numba the matrix searches exactly)."""
    return _approx_top is not None
