"""Fusion on hand-computed examples (no engines needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from retrieval.search.fusion import (
    Adaptive,
    FusionConfig,
    FusionError,
    ScoredDoc,
    adaptive_weights,
    fuse,
    list_features,
    normalize,
    reciprocal_rank_fusion,
    weighted_fusion,
)

RUNS = {
    "bm25": [ScoredDoc("a", 12.0), ScoredDoc("b", 10.0), ScoredDoc("c", 4.0)],
    "dense": [ScoredDoc("c", 0.9), ScoredDoc("a", 0.5)],
}


def test_rrf_by_hand() -> None:
    fused = reciprocal_rank_fusion(RUNS, k=60)
    scores = {d.doc_id: d.score for d in fused}
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["b"] == pytest.approx(1 / 62)
    assert [d.doc_id for d in fused] == ["a", "c", "b"]
    assert fused[0].sources["dense"].rank == 2 and fused[0].sources["dense"].score == 0.5
    assert "dense" not in fused[2].sources


def test_rrf_weights_and_ties_are_deterministic() -> None:
    runs = {"x": [ScoredDoc("b", 1.0)], "y": [ScoredDoc("a", 1.0)]}
    assert [d.doc_id for d in reciprocal_rank_fusion(runs)] == ["a", "b"]  # tie -> id ascending
    weighted = reciprocal_rank_fusion(runs, weights={"x": 2.0})
    assert [d.doc_id for d in weighted] == ["b", "a"]
    assert weighted[0].score == pytest.approx(2 / 61)


def test_minmax_weighted_by_hand() -> None:
    fused = weighted_fusion(RUNS, weights={"bm25": 0.3, "dense": 0.7}, normalization="minmax")
    scores = {d.doc_id: d.score for d in fused}
    # bm25 minmax: a=1, b=0.75, c=0; dense minmax: c=1, a=0; b missing from dense -> 0
    assert scores["a"] == pytest.approx(0.3 * 1 + 0.7 * 0)
    assert scores["b"] == pytest.approx(0.3 * 0.75)
    assert scores["c"] == pytest.approx(0.7)
    assert [d.doc_id for d in fused] == ["c", "a", "b"]


def test_zscore_weighted_by_hand() -> None:
    fused = weighted_fusion(RUNS, normalization="zscore")
    bm25 = [12.0, 10.0, 4.0]
    mean = sum(bm25) / 3
    std = math.sqrt(sum((s - mean) ** 2 for s in bm25) / 3)
    z = {d: (s - mean) / std for d, s in zip("abc", bm25)}
    # dense z: c=+1, a=-1; b is missing there -> dense floor (-1)
    scores = {d.doc_id: d.score for d in fused}
    assert scores["a"] == pytest.approx(z["a"] - 1)
    assert scores["b"] == pytest.approx(z["b"] - 1)
    assert scores["c"] == pytest.approx(z["c"] + 1)


def test_normalize_degenerate() -> None:
    assert normalize([3.0, 3.0], "minmax") == [1.0, 1.0]
    assert normalize([3.0, 3.0], "zscore") == [0.0, 0.0]
    assert normalize([], "minmax") == []


@pytest.mark.parametrize("weights", [{"bm25": -1.0}, {"bm25": 0.0, "dense": 0.0}, {"bm25": float("nan")}, {"other": 1.0}])
def test_bad_weights(weights: dict[str, float]) -> None:
    with pytest.raises(FusionError):
        fuse(RUNS, FusionConfig(method="weighted", weights=weights))


def test_bad_rrf_k() -> None:
    with pytest.raises(FusionError):
        fuse(RUNS, FusionConfig(method="rrf", rrf_k=0))


def test_dbsf_by_hand() -> None:
    """Qdrant's distr_norm: mean ± 3 sample std onto 0..1; a missing document adds 0."""
    fused = weighted_fusion(RUNS, weights={"bm25": 1.0, "dense": 2.0}, normalization="dbsf")
    bm25 = [12.0, 10.0, 4.0]
    mean = sum(bm25) / 3
    std = math.sqrt(sum((s - mean) ** 2 for s in bm25) / 2)
    n = {d: (s - (mean - 3 * std)) / (6 * std) for d, s in zip("abc", bm25)}
    dense_std = math.sqrt(2 * 0.2**2)  # scores 0.9, 0.5: mean 0.7, sample variance 0.08
    dn = {"c": (0.9 - (0.7 - 3 * dense_std)) / (6 * dense_std), "a": (0.5 - (0.7 - 3 * dense_std)) / (6 * dense_std)}
    scores = {d.doc_id: d.score for d in fused}
    assert scores["a"] == pytest.approx(n["a"] + 2 * dn["a"])
    assert scores["b"] == pytest.approx(n["b"])  # missing from dense: + 0
    assert scores["c"] == pytest.approx(n["c"] + 2 * dn["c"])
    assert [d.doc_id for d in fused] == sorted(scores, key=lambda d: -scores[d])


def test_dbsf_degenerate() -> None:
    assert normalize([3.0], "dbsf") == [0.5]
    assert normalize([3.0, 3.0], "dbsf") == [0.5, 0.5]
    assert normalize([], "dbsf") == []


def _run(*pairs: tuple[str, float]) -> list[ScoredDoc]:
    return [ScoredDoc(d, s) for d, s in pairs]


def test_list_features_and_adaptive_weights_by_hand() -> None:
    runs = {
        "a": _run(*[(f"d{i}", 20.0 - i) for i in range(20)]),  # a steady slope
        "b": _run(*[(f"d{i}", 1.0 if i == 0 else 0.1) for i in range(20)]),  # one clear winner
    }
    features = list_features(runs)
    assert features["a"]["margin"] == pytest.approx(9 / 19)
    assert features["b"]["margin"] == pytest.approx(0.9 / 0.9)
    assert features["a"]["agreement"] == features["b"]["agreement"] == 1.0
    head = np.arange(20.0, 10.0, -1)
    assert features["a"]["nqc"] == pytest.approx(head.std() / np.arange(20.0, 0.0, -1).mean())
    weights = adaptive_weights(runs, {"a": 1.0, "b": 1.0}, Adaptive({"margin": 2.0}))
    assert weights["b"] / weights["a"] == pytest.approx(np.exp(2.0 * (1.0 - 9 / 19)))
    centered = adaptive_weights(runs, {"a": 1.0, "b": 1.0}, Adaptive({"margin": 2.0}, {"b": {"margin": 1.0}}))
    assert centered["b"] == pytest.approx(1.0)
    # Zero coefficients are plain weighted fusion.
    plain = fuse(runs, FusionConfig("weighted", weights={"a": 0.3, "b": 0.7}))
    adaptive = fuse(runs, FusionConfig("weighted", weights={"a": 0.3, "b": 0.7}, adaptive=Adaptive({"nqc": 0.0})))
    assert [(d.doc_id, d.score) for d in plain] == [(d.doc_id, d.score) for d in adaptive]
    with pytest.raises(FusionError, match="unknown adaptive feature 'clarity'"):
        fuse(runs, FusionConfig("weighted", adaptive=Adaptive({"clarity": 1.0})))
    with pytest.raises(FusionError, match="weighted"):
        fuse(runs, FusionConfig("rrf", adaptive=Adaptive({"nqc": 1.0})))
