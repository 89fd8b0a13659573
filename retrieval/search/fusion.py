"""Rank fusion of several retrievers' result lists.

Pure functions over ranked lists, so they are easy to check by hand. Ties are broken by document
id (ascending) everywhere, which makes every fused ranking deterministic.

* RRF: ``score(d) = sum_r w_r / (k + rank_r(d))`` with ranks starting at 1 (Cormack et al. 2009).
* Weighted: ``score(d) = sum_r w_r * norm_r(score_r(d))``; a document a retriever did not return
  gets that retriever's lowest normalized value in the list (0 for min-max), so missing never
  beats retrieved.
* DBSF (distribution-based score fusion, as Qdrant's ``Fusion.DBSF``): weighted with normalization
  ``dbsf``; each list is scaled by ``(s - (mean - 3 std)) / (6 std)`` with the sample standard deviation; a list of one
  hit, or of equal scores, gives 0.5; a missing document adds 0, as in Qdrant. Unlike ``zscore`` it
  is bounded for well-behaved lists and keeps both retrievers on one 0..1 scale.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from retrieval.core.errors import HybridError
from retrieval.core.types import RetrieverScore, ScoredDoc

Normalization = Literal["minmax", "zscore", "dbsf"]
NORMALIZATIONS: tuple[str, ...] = ("minmax", "zscore", "dbsf")
FusionMethod = Literal["rrf", "weighted"]


@dataclass
class FusedDoc:
    doc_id: str
    score: float
    sources: dict[str, RetrieverScore] = field(default_factory=dict)


@dataclass(frozen=True)
class FusionConfig:
    method: FusionMethod = "rrf"
    rrf_k: int = 60
    weights: Mapping[str, float] | None = None
    normalization: Normalization = "minmax"


class FusionError(HybridError, ValueError):
    """Invalid fusion parameters; the message says what to fix."""


def _weights(runs: Mapping[str, Sequence[ScoredDoc]], weights: Mapping[str, float] | None) -> dict[str, float]:
    if weights is None:
        return {name: 1.0 for name in runs}
    unknown = sorted(set(weights) - set(runs))
    if unknown:
        raise FusionError(f"weights given for retrievers not searched: {', '.join(unknown)}")
    resolved = {name: float(weights.get(name, 1.0)) for name in runs}
    for name, w in resolved.items():
        if not math.isfinite(w) or w < 0:
            raise FusionError(f"weight for {name!r} must be a finite number >= 0, got {w}")
    if runs and all(w == 0 for w in resolved.values()):
        raise FusionError("at least one fusion weight must be greater than 0")
    return resolved


def _sources(runs: Mapping[str, Sequence[ScoredDoc]]) -> dict[str, dict[str, RetrieverScore]]:
    sources: dict[str, dict[str, RetrieverScore]] = {}
    for name, run in runs.items():
        for rank, doc in enumerate(run, start=1):
            sources.setdefault(doc.doc_id, {}).setdefault(name, RetrieverScore(rank, doc.score))
    return sources


def _ranked(scores: dict[str, float], sources: dict[str, dict[str, RetrieverScore]]) -> list[FusedDoc]:
    order = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [FusedDoc(doc_id, score, sources[doc_id]) for doc_id, score in order]


def reciprocal_rank_fusion(
    runs: Mapping[str, Sequence[ScoredDoc]], k: int = 60, weights: Mapping[str, float] | None = None
) -> list[FusedDoc]:
    if k < 1:
        raise FusionError(f"rrf_k must be >= 1, got {k}")
    w = _weights(runs, weights)
    sources = _sources(runs)
    scores = {
        doc_id: sum(w[name] / (k + hit.rank) for name, hit in per.items()) for doc_id, per in sources.items()
    }
    return _ranked(scores, sources)


def normalize(scores: Sequence[float], method: Normalization) -> list[float]:
    if not scores:
        return []
    if method == "minmax":
        low, high = min(scores), max(scores)
        if high == low:
            return [1.0 for _ in scores]
        return [(s - low) / (high - low) for s in scores]
    if method == "zscore":
        mean = sum(scores) / len(scores)
        std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
        if std == 0:
            return [0.0 for _ in scores]
        return [(s - mean) / std for s in scores]
    if method == "dbsf":
        return dbsf_normalize(scores)
    raise FusionError(f"unknown normalization {method!r}; use minmax, zscore or dbsf")


def dbsf_normalize(scores: Sequence[float]) -> list[float]:
    """Qdrant's ``distr_norm``: mean ± 3 sample standard deviations mapped onto 0..1 (not clamped)."""
    if len(scores) < 2:
        return [0.5 for _ in scores]
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / (len(scores) - 1))
    if std == 0:
        return [0.5 for _ in scores]
    low = mean - 3 * std
    return [(s - low) / (6 * std) for s in scores]


def weighted_fusion(
    runs: Mapping[str, Sequence[ScoredDoc]],
    weights: Mapping[str, float] | None = None,
    normalization: Normalization = "minmax",
) -> list[FusedDoc]:
    w = _weights(runs, weights)
    sources = _sources(runs)
    normalized: dict[str, dict[str, float]] = {}
    floor: dict[str, float] = {}
    for name, run in runs.items():
        seen: dict[str, float] = {}
        for doc, value in zip(run, normalize([d.score for d in run], normalization)):
            seen.setdefault(doc.doc_id, value)
        normalized[name] = seen
        # DBSF adds nothing for a missing document, as Qdrant does; the others use the list's floor.
        floor[name] = 0.0 if normalization == "dbsf" or not seen else min(seen.values())
    scores = {
        doc_id: sum(w[name] * normalized[name].get(doc_id, floor[name]) for name in runs) for doc_id in sources
    }
    return _ranked(scores, sources)


def fuse(runs: Mapping[str, Sequence[ScoredDoc]], config: FusionConfig) -> list[FusedDoc]:
    if config.method == "rrf":
        return reciprocal_rank_fusion(runs, k=config.rrf_k, weights=config.weights)
    if config.method == "weighted":
        return weighted_fusion(runs, weights=config.weights, normalization=config.normalization)
    raise FusionError(f"unknown fusion method {config.method!r}; use rrf or weighted")
