"""How many clusters an approximate SPLADE search must score: recall@10 against the exact search, measured.

Sample queries (the corpus's own, encoded, or documents' heaviest impacts as queries) are searched exactly (every
row of the matrix) and with growing ``probes``; the first value whose recall@10 reaches the target is the cheapest
that does (more probes score more rows: cost only grows). Recall counts an approximate hit when its score reaches
the exact 10th score, so documents tied at the cut count whichever of them comes back (scores are exact either way).
The last value tried is every cluster, which is the exhaustive search: a target is always reached, at worst there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from indexes.storage.sparse.impact_matrix import FOLDER, ImpactMatrix

PROBES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
          6144, 8192)
K = 10
SAMPLE_TERMS = 20  # a document sampled as a query: its heaviest impacts
SAMPLE_PARTS = 4  # parts read for sampling (a part holds about 16M impacts)
SEED = 13


@dataclass
class Measured:
    """The cheapest ``probes`` reaching the target (``reached``), with its recall; every value tried in ``grid``."""

    probes: int
    recall: float
    reached: bool
    exact_p50_ms: float
    queries: int
    grid: list[dict[str, Any]] = field(default_factory=list)


def sample_queries(matrix: ImpactMatrix, count: int, terms: int = SAMPLE_TERMS, seed: int = SEED
                   ) -> list[dict[str, int]]:
    """``count`` rows of the matrix's parts (seeded; from at most :data:`SAMPLE_PARTS` parts), each as a query of
    its ``terms`` heaviest impacts."""
    rng = np.random.default_rng(seed)
    parts = sorted((matrix.folder / FOLDER).glob("part-*.npz"))
    chosen = sorted(rng.choice(len(parts), min(len(parts), SAMPLE_PARTS), replace=False).tolist()) if parts else []
    queries: list[dict[str, int]] = []
    for i, number in enumerate(chosen):
        with np.load(parts[number]) as data:
            indptr, ids, weights, vocab = data["indptr"], data["terms"], data["weights"], data["vocab"]
        rows = len(indptr) - 1
        want = min(rows, count // len(chosen) + (1 if i < count % len(chosen) else 0))
        for row in sorted(rng.choice(rows, want, replace=False).tolist()) if rows else []:
            a, e = int(indptr[row]), int(indptr[row + 1])
            top = np.argsort(-weights[a:e].astype(np.int64), kind="stable")[:terms]
            vector = {str(vocab[ids[a + j]]): int(weights[a + j]) for j in top.tolist()}
            if vector:
                queries.append(vector)
    return queries


def recall_at(exact: tuple[np.ndarray, np.ndarray], found: np.ndarray, k: int = K) -> float | None:
    """Share of the exact top ``k`` an approximate answer (its float32 scores) holds, ties at the cut counted
    (None: the exact search found nothing)."""
    scores = np.sort(exact[0])[::-1]
    if not len(scores):
        return None
    wanted = min(k, len(scores))
    return min(wanted, int(np.count_nonzero(found >= scores[wanted - 1]))) / wanted


def measure(matrix: ImpactMatrix, vectors: list[dict[str, int]], target: float, k: int = K) -> Measured | None:
    """The cheapest ``probes`` whose mean recall@``k`` over ``vectors`` reaches ``target``; None where the matrix has
    no clusters (or no query found anything)."""
    clusters = matrix.clusters
    if clusters is None:
        return None
    exact, times = [], []
    for vector in vectors:
        started = time.perf_counter()
        exact.append(matrix.search_arrays(vector, k))
        times.append(time.perf_counter() - started)
    kept = [i for i, (scores, _) in enumerate(exact) if len(scores)]
    if not kept:
        return None
    grid: list[dict[str, Any]] = []
    for probes in [p for p in PROBES if p < clusters.count] + [clusters.count]:
        recalls, spent = [], []
        for i in kept:
            started = time.perf_counter()
            found, _ = matrix.search_arrays(vectors[i], k, probes=probes)
            spent.append(time.perf_counter() - started)
            recalls.append(recall_at(exact[i], found, k))
        recall = float(np.mean(recalls))
        grid.append({"parameters": {"probes": probes}, "recall_at_10": round(recall, 4),
                     "p50_ms": round(float(np.median(spent)) * 1000, 4)})
        if recall >= target:
            break
    best = grid[-1]
    return Measured(best["parameters"]["probes"], best["recall_at_10"], best["recall_at_10"] >= target,
                    float(np.median(times)) * 1000, len(kept), grid)
