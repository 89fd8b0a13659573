"""How wide an ANN search must look: efSearch (HNSW) or nprobe (IVF), from recall@10 against exact search, measured.

Sample query vectors (the corpus's own queries, encoded, or sampled documents' stored vectors) are searched exactly
(every stored vector, :meth:`FaissIndex.search` with ``exact``) and through the ANN index with growing values; the
first value whose mean recall@10 reaches the target is the cheapest that does (a wider search only costs more). A
document sampled as a query is left out of its own answers (exact and approximate): finding itself is trivially
easy and would flatter the recall. Recall counts an approximate hit when its score reaches the exact 10th score, so
ties at the cut count whichever of them comes back (within float rounding). IVF's last value is every list, the exhaustive search; HNSW has
none, so a target beyond its largest efSearch is not reached (the build warns).

Each query is searched alone, one at a time, as a service searches: the grid's p50 is a per-query time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from indexes.storage.faiss.backend import FaissIndex, _faiss

EF_SEARCH = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
NPROBE = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 4096, 8192,
          16384, 32768, 65536)
K = 10
SEED = 13
TOLERANCE = 1e-5


@dataclass
class Measured:
    """The cheapest value reaching the target (``reached``), with its recall; every value tried in ``grid``."""

    parameters: dict[str, int]
    recall: float
    reached: bool
    exhaustive: bool
    exact_p50_ms: float
    queries: int
    grid: list[dict[str, Any]] = field(default_factory=list)


def sample_queries(index: FaissIndex, count: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """``count`` documents' stored vectors (seeded) and their docnos, to search as queries."""
    docnos = index.docnos()
    if not len(docnos):
        return np.zeros((0, index.dimension), np.float32), docnos
    chosen = np.sort(np.random.default_rng(seed).choice(docnos, min(count, len(docnos)), replace=False))
    return index.reconstruct(chosen), chosen


def recall_at(exact_scores: np.ndarray, found: np.ndarray, k: int = K) -> float | None:
    """Share of the exact top ``k`` (its scores, best first) an approximate answer's scores hold, ties at the cut
    counted (None: the exact search found nothing). Scores compare within :data:`TOLERANCE`: the exact scan and FAISS
    add a vector's products in other orders, so one document's two scores may differ in the last bits."""
    if not len(exact_scores):
        return None
    wanted = min(k, len(exact_scores))
    return min(wanted, int(np.count_nonzero(found >= exact_scores[wanted - 1] - TOLERANCE))) / wanted


def _top(index: FaissIndex, query: np.ndarray, skip: int, exact: bool) -> tuple[np.ndarray, float]:
    """One query's top :data:`K` scores (``skip``: a docno left out; -1 none) and the seconds it took."""
    started = time.perf_counter()
    scores, docnos = index.search(query[None, :], K + (skip >= 0), exact=exact)
    spent = time.perf_counter() - started
    kept = (docnos[0] >= 0) & (docnos[0] != skip)
    return scores[0][kept][:K], spent


def measure(index: FaissIndex, vectors: np.ndarray, target: float, skip: np.ndarray | None = None) -> Measured | None:
    """The cheapest efSearch/nprobe whose mean recall@10 over ``vectors`` reaches ``target`` (``skip``: each query's
    own docno, left out of its answers); None where the index has nothing to tune or no query found anything. The
    index is left at the value chosen."""
    name = index.tunable
    if name is None or not index.approximate or not len(vectors):
        return None
    faiss = _faiss()
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # one query on one thread, as a request runs (OpenMP's barrier waits on busy cores)
    try:
        return _measure(index, name, vectors, target, skip)
    finally:
        faiss.omp_set_num_threads(threads)


def _measure(index: FaissIndex, name: str, vectors: np.ndarray, target: float, skip: np.ndarray | None
             ) -> Measured | None:
    skip = np.full(len(vectors), -1, np.int64) if skip is None else skip
    exact, times = [], []
    for vector, own in zip(vectors, skip.tolist()):
        scores, spent = _top(index, vector, own, exact=True)
        exact.append(scores)
        times.append(spent)
    kept = [i for i, scores in enumerate(exact) if len(scores)]
    if not kept:
        return None
    values = [v for v in EF_SEARCH] if name == "ef_search" else [v for v in NPROBE if v < index.nlist] + [index.nlist]
    grid: list[dict[str, Any]] = []
    for value in values:
        index.set_parameters(**{name: value})
        recalls, spent = [], []
        for i in kept:
            found, seconds = _top(index, vectors[i], int(skip[i]), exact=False)
            recalls.append(recall_at(exact[i], found))
            spent.append(seconds)
        recall = float(np.mean(recalls))
        grid.append({"parameters": {name: value}, "recall_at_10": round(recall, 4),
                     "p50_ms": round(float(np.median(spent)) * 1000, 4)})
        if recall >= target:
            break
    best = max(grid, key=lambda g: g["recall_at_10"]) if grid[-1]["recall_at_10"] < target else grid[-1]
    chosen = best["parameters"][name]
    index.set_parameters(**{name: chosen})
    parameters = {name: chosen, **({"nlist": index.nlist} if name == "nprobe" else {})}
    return Measured(parameters, best["recall_at_10"], best["recall_at_10"] >= target,
                    name == "nprobe" and chosen >= index.nlist, float(np.median(times)) * 1000, len(kept), grid)
