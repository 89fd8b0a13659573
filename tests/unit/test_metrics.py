"""BEIR harness parts by hand: metrics, BEIR's rules, run files, method specs, significance, the leaderboard."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from eval.beir_data import load_dataset
from eval.harness import write_run
from eval.metrics import MetricError, evaluate, mean, parse_metrics, remove_self_hits
from eval.significance import paired_randomization
from retrieval.search.specs import SpecError, parse_spec
from tests.support import make_dataset

QRELS = {"q1": {"d1": 2, "d2": 1, "d9": 0}, "q2": {"d3": 1}, "q3": {"d4": 1}}
RUN = {"q1": {"d1": 3.0, "d5": 2.0, "d2": 1.0}, "q2": {"d4": 2.0, "d3": 1.0}, "qx": {"d1": 1.0}}


def test_metrics_by_hand() -> None:
    scores = evaluate(RUN, QRELS, parse_metrics("ndcg@10,recall@1,map,mrr@10,p@1"))
    # q1: gains 2, 0, 1 at ranks 1..3; ideal 2, 1 (trec_eval: gain = relevance, discount log2(rank + 1)).
    assert scores["ndcg@10"]["q1"] == pytest.approx((2 + 1 / math.log2(4)) / (2 + 1 / math.log2(3)))
    assert scores["ndcg@10"]["q2"] == pytest.approx(1 / math.log2(3))
    assert scores["recall@1"] == {"q1": 0.5, "q2": 0.0}
    assert scores["map"]["q1"] == pytest.approx((1 + 2 / 3) / 2)
    assert scores["mrr@10"] == {"q1": 1.0, "q2": 0.5}
    assert scores["p@1"] == {"q1": 1.0, "q2": 0.0}
    # q3 has judgments but no run and qx has a run but no judgments: neither is scored (as BEIR/trec_eval).
    assert set(scores["ndcg@10"]) == {"q1", "q2"}
    assert mean(scores["mrr@10"]) == 0.75


def test_self_hits_and_metric_names() -> None:
    assert remove_self_hits({"a": {"a": 1.0, "b": 0.5}}) == {"a": {"b": 0.5}}
    with pytest.raises(MetricError):
        parse_metrics("ndcg@0")
    with pytest.raises(MetricError):
        parse_metrics("bleu@4")


def test_specs() -> None:
    spec = parse_spec("weighted:splade=0.6,dense=0.4:zscore")
    assert spec.retrievers == ("splade", "dense") and spec.fusion and spec.fusion.normalization == "zscore"
    assert parse_spec("rrf:bm25+dense:20").fusion.rrf_k == 20  # type: ignore[union-attr]
    assert parse_spec("bm25").fusion is None
    dbsf = parse_spec("weighted:splade+dense:dbsf")
    assert dbsf.retrievers == ("splade", "dense") and dbsf.fusion and dbsf.fusion.normalization == "dbsf"
    assert dbsf.fusion.weights == {"splade": 1.0, "dense": 1.0}
    for bad in ("rrf:bm25", "rrf:bm25+col bert", "weighted:bm25=-1,dense=1", "sum:bm25+dense", "weighted:bm25=x,dense=1",
                "bm25+dense", "rm3", "rrf:bm25+rm3+rm3", "bm25+rm3(fb_docs=x)", "bm25+rm3(depth=3)", "qpp:bm25"):
        with pytest.raises(SpecError):
            parse_spec(bad)
    # PRF sources: a PRF method belongs to the retriever before it; parameters in parentheses.
    prf = parse_spec("bm25+rm3")
    assert prf.retrievers == ("bm25+rm3",) and prf.fusion is None
    assert prf.sources["bm25+rm3"].retriever == "bm25" and prf.sources["bm25+rm3"].prf.method == "rm3"  # type: ignore[union-attr]
    hybrid = parse_spec("rrf:bm25+rm3(fb_docs=5,fb_terms=20)+dense+average")
    assert hybrid.retrievers == ("bm25+rm3(fb_docs=5,fb_terms=20)", "dense+average")
    assert hybrid.sources["bm25+rm3(fb_docs=5,fb_terms=20)"].prf.fb_terms == 20  # type: ignore[union-attr]
    weighted = parse_spec("weighted:bm25+rm3(fb_docs=5)=0.3,dense=0.7")
    assert weighted.fusion.weights == {"bm25+rm3(fb_docs=5)": 0.3, "dense": 0.7}  # type: ignore[union-attr]
    qpp = parse_spec("qpp:bm25+splade+dense:zscore")
    assert qpp.adaptive and qpp.fusion.normalization == "zscore" and qpp.retrievers == ("bm25", "splade", "dense")  # type: ignore[union-attr]


def test_randomization_test() -> None:
    a = {str(i): 1.0 for i in range(30)}
    b = {str(i): 0.0 for i in range(30)}
    assert paired_randomization(a, b) < 0.001
    assert paired_randomization(a, a) == 1.0
    noisy = {str(i): (1.0 if i % 2 else 0.0) for i in range(30)}
    flipped = {str(i): (0.0 if i % 2 else 1.0) for i in range(30)}
    assert paired_randomization(noisy, flipped) > 0.5
    assert paired_randomization(a, b, seed=1) == paired_randomization(a, b, seed=1)


def test_run_file_format(tmp_path: Path) -> None:
    write_run(tmp_path / "run.trec", {"q1": {"b": 1.0, "a": 1.0, "c": 2.0}}, "tag")
    lines = [line.split() for line in (tmp_path / "run.trec").read_text().splitlines()]
    assert lines == [["q1", "Q0", "c", "1", "2.000000", "tag"], ["q1", "Q0", "a", "2", "1.000000", "tag"],
                     ["q1", "Q0", "b", "3", "1.000000", "tag"]]


def test_dataset_keeps_judged_queries(tmp_path: Path) -> None:
    dataset = load_dataset(make_dataset(tmp_path))
    assert sorted(dataset.queries) == ["1", "2", "3", "4"]
    assert sorted(dataset.qrels["4"].values()) == [0, 1]  # graded, zero judgments kept as BEIR keeps them


def test_leaderboard_prints_anchor_beside_ours() -> None:
    from eval.harness import MethodResult
    from eval.report import leaderboard

    results = [MethodResult("cranfield", "bm25", 225, {"ndcg@10": 0.3512}, 0.0, 1.0, 0.0),
               MethodResult("cranfield", "dense", 225, {"ndcg@10": 0.38}, 2.0, 1.0, 0.0, p_vs_bm25=0.01)]
    markdown, rows = leaderboard(results, "ndcg@10")
    assert "| cranfield | bm25 | 0.3512 | 0.3510 | +0.0002 |" in markdown
    assert rows[0][:3] == ["method", "cranfield", "average"] and rows[2][rows[0].index("p vs bm25")] == "cranfield: 0.0100"


def test_specs_with_query_modes() -> None:
    from eval.harness import _without_prf

    spec = parse_spec("rrf:bm25+splade@onnx-int8+dense@onnx+average")
    assert spec.retrievers == ("bm25", "splade@onnx-int8", "dense@onnx+average")
    assert spec.sources["splade@onnx-int8"].mode == "onnx-int8" and spec.sources["splade@onnx-int8"].prf is None
    dense = spec.sources["dense@onnx+average"]
    assert (dense.retriever, dense.mode, dense.prf.method if dense.prf else None) == ("dense", "onnx", "average")
    assert _without_prf(spec.name, spec) == "rrf:bm25+splade+dense"  # the leaderboard's "p vs base"
    single = parse_spec("splade@tokens")
    assert single.name == "splade@tokens" and _without_prf(single.name, single) == "splade"
    with pytest.raises(SpecError, match="not a query mode"):
        parse_spec("splade@Fast")
    with pytest.raises(SpecError, match="is not a search option"):
        parse_spec("splade@onnx!")
