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
* QPP-weighted (query-adaptive): the weighted sum with per-query weights
  ``w_r(q) = w_r * exp(sum_f theta_f * (x_rf(q) - c_rf))``, where ``x_rf`` are query-performance
  predictors read off retriever r's own result list (:func:`list_features`), ``c_rf`` their mean
  over training queries and ``theta`` is fit by cross-validation in the evaluation harness. A
  retriever whose list looks confident for this query (a clear head, agreement with the others)
  gets more say; the idea follows QPP-based fusion weighting, with NQC after Shtok et al. (2012).
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from retrieval.core.errors import HybridError
from retrieval.core.runs import Run, same_space
from retrieval.core.types import RetrieverScore, ScoredDoc
from retrieval.search.rank_sum import rank_sum

Normalization = Literal["minmax", "zscore", "dbsf"]
NORMALIZATIONS: tuple[str, ...] = ("minmax", "zscore", "dbsf")
FusionMethod = Literal["rrf", "weighted"]


@dataclass(slots=True)
class FusedDoc:
    doc_id: str
    score: float
    sources: dict[str, RetrieverScore] = field(default_factory=dict)
    # Every fused retriever's share of ``score``, those that did not return the document included (a
    # weighted sum gives them the list's floor): the shares add up to ``score``.
    contributions: dict[str, float] = field(default_factory=dict)


FEATURES = ("nqc", "margin", "agreement")
HEAD = 10  # the "top" of a list, for NQC, margin and agreement
FEATURE_DEPTH = 100  # features read this many hits of each list, so they do not depend on the request's depth


@dataclass(frozen=True)
class Adaptive:
    """Per-query weights for weighted fusion: ``coefficients`` (theta, per feature of :data:`FEATURES`)
    and ``centers`` (per retriever, per feature: the training mean; missing ones are 0)."""

    coefficients: Mapping[str, float]
    centers: Mapping[str, Mapping[str, float]] | None = None


@dataclass(frozen=True)
class FusionConfig:
    method: FusionMethod = "rrf"
    rrf_k: int = 60
    weights: Mapping[str, float] | None = None
    normalization: Normalization = "minmax"
    adaptive: Adaptive | None = None  # weighted only
    # minmax only: fixed (low, high) per retriever instead of each list's own min and max; scores are
    # clamped into the bounds, and a missing document counts as the lower bound (0).
    bounds: Mapping[str, tuple[float, float]] | None = None

    def without(self, names: Sequence[str]) -> FusionConfig:
        """This fusion over the other retrievers (a search past its deadline skipped ``names``)."""
        weights = {n: w for n, w in (self.weights or {}).items() if n not in names}
        return replace(self, weights=weights if any(weights.values()) else None,
                       bounds={n: b for n, b in self.bounds.items() if n not in names} or None if self.bounds else None)


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


def _fused(runs: Mapping[str, Sequence[ScoredDoc]], shares: Mapping[str, Sequence[float]],
           missing: Mapping[str, float], limit: int | None = None, finite: bool = False,
           normalized: Mapping[str, Sequence[float]] | None = None,
           arrays: Mapping[str, np.ndarray] | None = None, explain: bool = True) -> list[FusedDoc]:
    """The fused ranking: each document's score is the sum of every retriever's share at the document's rank
    (``shares[name][rank - 1]``) where it returned the document and ``missing`` where it did not. Only the first
    ``limit`` documents are explained (with ``normalized`` scores where given): a request shows ``offset + k`` of
    the ``depth`` candidates of each retriever, and explaining all of them cost more than the retrievers' search.
    Plain loops over dicts, no call per candidate; runs of one document store go through :func:`_fused_arrays`
    (``arrays``: ``shares`` as float64 arrays, where the caller has them). Without ``explain`` the documents carry
    no sources or contributions."""
    if same_space(list(runs.values())):
        return _fused_arrays(runs, shares, missing, limit, finite, normalized, arrays, explain)  # type: ignore[arg-type]
    names = list(runs)
    # Per retriever: each document's first rank (a document listed twice counts there); the dict is built from
    # the end, so an earlier rank overwrites a later one.
    firsts = {name: {d.doc_id: r for r, d in zip(range(len(run), 0, -1), reversed(run))} for name, run in runs.items()}
    scores: dict[str, float] = {}
    if not any(missing.values()):  # a missing retriever adds 0: sum over those that list it, in retriever order
        get = scores.get
        for name in names:
            share = shares[name]
            for doc_id, rank in firsts[name].items():
                scores[doc_id] = get(doc_id, 0) + share[rank - 1]
    else:
        for doc_id in {doc_id: None for name in names for doc_id in firsts[name]}:
            scores[doc_id] = sum(shares[name][firsts[name][doc_id] - 1] if doc_id in firsts[name] else missing[name]
                                 for name in names)
    if finite and not all(math.isfinite(score) for score in scores.values()):
        raise FusionError("the weighted sum overflows: the weights are too large; weights are relative, so scale "
                          "them all down")
    order = sorted(scores.items(), key=_FIRST)  # by id, then (stable) by score descending: ties go by id
    order.sort(key=_SECOND, reverse=True)
    page = order if limit is None else order[:limit]
    if not explain:
        return [FusedDoc(doc_id, score) for doc_id, score in page]
    return [_explained(doc_id, score, names, [firsts[name].get(doc_id, 0) for name in names],
                       lambda name, rank: runs[name][rank - 1].score, shares, missing, normalized)
            for doc_id, score in page]


def _explained(doc_id: str, score: float, names: Sequence[str], ranks: Sequence[int],
               raw: Callable[[str, int], float], shares: Mapping[str, Sequence[float]], missing: Mapping[str, float],
               normalized: Mapping[str, Sequence[float]] | None) -> FusedDoc:
    """One fused document with its sources and contributions: ``ranks`` holds its 1-based rank in each retriever
    (0: not returned), ``raw(name, rank)`` the retriever's own score there."""
    sources: dict[str, RetrieverScore] = {}
    contributions: dict[str, float] = {}
    for name, rank in zip(names, ranks):
        if not rank:
            contributions[name] = missing[name]
            continue
        share = contributions[name] = shares[name][rank - 1]
        sources[name] = RetrieverScore(rank, raw(name, rank), normalized[name][rank - 1] if normalized else None, share)
    return FusedDoc(doc_id, score, sources, contributions)


_FIRST, _SECOND = operator.itemgetter(0), operator.itemgetter(1)


def _fused_arrays(runs: Mapping[str, Run], shares: Mapping[str, Sequence[float]], missing: Mapping[str, float],
                  limit: int | None, finite: bool, normalized: Mapping[str, Sequence[float]] | None,
                  arrays: Mapping[str, np.ndarray] | None, explain: bool) -> list[FusedDoc]:
    """:func:`_fused` of runs whose docnos name the same documents, summed in one compiled call
    (:mod:`retrieval.search.rank_sum`): the same scores to the bit and the same order (ids break ties among the
    page and the ties at its cut, the only documents whose ids are read)."""
    names = list(runs)
    docnos = tuple(runs[name].docnos for name in names)
    flat = tuple(arrays[name] if arrays else np.asarray(shares[name], dtype=np.float64) for name in names)
    take = sum(map(len, docnos)) if limit is None else limit
    totals, ranks, chosen = rank_sum(docnos, flat, tuple(float(missing[name]) for name in names), take)
    if finite and not bool(np.isfinite(totals).all()):
        raise FusionError("the weighted sum overflows: the weights are too large; weights are relative, so scale "
                          "them all down")
    scores = totals[chosen].tolist()
    chosen_ranks = ranks[:, chosen].tolist()
    order = []
    for i, score in enumerate(scores):
        doc_id = next(runs[name].ids[r[i] - 1] for name, r in zip(names, chosen_ranks) if r[i])
        order.append((doc_id, score, i))
    order.sort(key=_FIRST)  # by id, then (stable) by score descending: ties go by id
    order.sort(key=_SECOND, reverse=True)
    if not explain:
        return [FusedDoc(doc_id, score) for doc_id, score, _ in order[:take]]
    return [_explained(doc_id, score, names, [r[i] for r in chosen_ranks],
                       lambda name, rank: runs[name].scores[rank - 1], shares, missing, normalized)
            for doc_id, score, i in order[:take]]


@functools.lru_cache(maxsize=256)
def _rrf_shares(weight: float, k: int, n: int) -> tuple[list[float], np.ndarray]:
    """RRF's share at ranks 1..n, as a list and as a float64 array (a request's runs are mostly ``depth`` long, so
    they repeat). Read-only: both are shared."""
    shares = [weight / (k + rank) for rank in range(1, n + 1)]
    return shares, np.asarray(shares, dtype=np.float64)


def reciprocal_rank_fusion(
    runs: Mapping[str, Sequence[ScoredDoc]], k: int = 60, weights: Mapping[str, float] | None = None,
    limit: int | None = None, explain: bool = True,
) -> list[FusedDoc]:
    if k < 1:
        raise FusionError(f"rrf_k must be >= 1, got {k}")
    w = _weights(runs, weights)
    cached = {name: _rrf_shares(w[name], k, len(run)) for name, run in runs.items()}
    shares = {name: listed for name, (listed, _) in cached.items()}
    return _fused(runs, shares, {name: 0.0 for name in runs}, limit, arrays={n: a for n, (_, a) in cached.items()},
                  explain=explain)


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


def _bounded(scores: Sequence[float], bounds: tuple[float, float]) -> list[float]:
    low, high = bounds
    return [min(1.0, max(0.0, (s - low) / (high - low))) for s in scores]


def check_bounds(bounds: Mapping[str, tuple[float, float]] | None, runs: Mapping[str, object],
                 normalization: str) -> None:
    if not bounds:
        return
    if normalization != "minmax":
        raise FusionError("bounds apply to minmax normalization; set normalization to minmax")
    unknown = sorted(set(bounds) - set(runs))
    if unknown:
        raise FusionError(f"bounds given for retrievers not searched: {', '.join(unknown)}")
    for name, (low, high) in bounds.items():
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise FusionError(f"bounds for {name!r} must be two finite numbers, low < high; got [{low}, {high}]")


def weighted_fusion(
    runs: Mapping[str, Sequence[ScoredDoc]],
    weights: Mapping[str, float] | None = None,
    normalization: Normalization = "minmax",
    bounds: Mapping[str, tuple[float, float]] | None = None,
    limit: int | None = None, explain: bool = True,
) -> list[FusedDoc]:
    check_bounds(bounds, runs, normalization)
    w = _weights(runs, weights)
    values: dict[str, list[float]] = {}
    floor: dict[str, float] = {}
    for name, run in runs.items():
        raw = run.scores if isinstance(run, Run) else [d.score for d in run]
        fixed = (bounds or {}).get(name)
        values[name] = _bounded(raw, fixed) if fixed is not None else normalize(raw, normalization)
        # DBSF adds nothing for a missing document, as Qdrant does, nor do fixed bounds (the lower bound);
        # the others use the list's floor (over each document's first place; a Run lists each document once).
        if normalization == "dbsf" or fixed is not None or not run:
            floor[name] = 0.0
        elif isinstance(run, Run):
            floor[name] = min(values[name])
        else:
            seen: dict[str, float] = {}
            for doc, value in zip(run, values[name]):
                seen.setdefault(doc.doc_id, value)
            floor[name] = min(seen.values())

    shares = {name: [w[name] * value for value in values[name]] for name in runs}
    return _fused(runs, shares, {name: w[name] * floor[name] for name in runs}, limit, finite=True, normalized=values,
                  explain=explain)


def list_features(runs: Mapping[str, Sequence[ScoredDoc]]) -> dict[str, dict[str, float]]:
    """Scale-free query-performance predictors of each retriever's list (its top :data:`FEATURE_DEPTH`
    hits), so retrievers compare.

    * ``nqc``: the spread of the head's scores over the list's mean score (normalized query
      commitment, with the list standing in for the corpus), capped at 10;
    * ``margin``: how much of the list's score range the head spans, ``(s_1 - s_10) / (s_1 - s_n)``;
    * ``agreement``: the share of the head that the other retrievers' heads also hold.
    """
    heads = {name: {d.doc_id for d in run[:HEAD]} for name, run in runs.items()}
    features: dict[str, dict[str, float]] = {}
    for name, run in runs.items():
        scores = [d.score for d in run[:FEATURE_DEPTH]]
        head = scores[:HEAD]
        if len(scores) < 2:
            features[name] = {"nqc": 0.0, "margin": 0.0, "agreement": 0.0}
            continue
        mean_all = sum(scores) / len(scores)
        mean_head = sum(head) / len(head)
        std_head = math.sqrt(sum((x - mean_head) ** 2 for x in head) / len(head))
        nqc = min(10.0, std_head / abs(mean_all)) if mean_all else 0.0
        spread = scores[0] - scores[-1]
        margin = (head[0] - head[-1]) / spread if spread > 0 else 0.0
        others = [heads[o] for o in runs if o != name]
        agreement = (sum(len(heads[name] & h) for h in others) / (len(others) * len(heads[name]))
                     if others and heads[name] else 0.0)
        features[name] = {"nqc": nqc, "margin": margin, "agreement": agreement}
    return features


def adaptive_weights(runs: Mapping[str, Sequence[ScoredDoc]], weights: Mapping[str, float],
                     adaptive: Adaptive) -> dict[str, float]:
    """This query's weights: each base weight scaled by ``exp(theta . (features - centers))``."""
    unknown = sorted(set(adaptive.coefficients) - set(FEATURES))
    if unknown:
        raise FusionError(f"unknown adaptive feature {unknown[0]!r}; use {', '.join(FEATURES)}")
    features = list_features(runs)
    centers = adaptive.centers or {}
    out = {}
    for name, base in weights.items():
        exponent = sum(theta * (features[name][f] - centers.get(name, {}).get(f, 0.0))
                       for f, theta in adaptive.coefficients.items())
        out[name] = base * math.exp(max(-30.0, min(30.0, exponent)))
    return out


def fuse(runs: Mapping[str, Sequence[ScoredDoc]], config: FusionConfig, limit: int | None = None,
         explain: bool = True) -> list[FusedDoc]:
    """The fused ranking of ``runs``; with ``limit``, only its first ``limit`` documents (the order is the same).
    ``explain``: each document's sources and contributions (a request without explanations skips them)."""
    if config.method == "rrf":
        if config.adaptive is not None:
            raise FusionError("adaptive weights apply to weighted fusion; set method to weighted")
        if config.bounds:
            raise FusionError("bounds apply to weighted fusion with minmax normalization; set method to weighted")
        return reciprocal_rank_fusion(runs, k=config.rrf_k, weights=config.weights, limit=limit, explain=explain)
    if config.method == "weighted":
        weights = config.weights
        if config.adaptive is not None:
            weights = adaptive_weights(runs, _weights(runs, weights), config.adaptive)
        return weighted_fusion(runs, weights=weights, normalization=config.normalization, bounds=config.bounds,
                               limit=limit, explain=explain)
    raise FusionError(f"unknown fusion method {config.method!r}; use rrf or weighted")
