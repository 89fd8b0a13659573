"""The BEIR harness end to end through the ``hybrid eval beir`` command: indexes, runs, metrics, significance, tuning,
reports; and a bad dataset in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import make_dataset
from tests.support.cli import run_cli


@pytest.mark.slow
def test_end_to_end_cli(tmp_path: Path) -> None:
    data = make_dataset(tmp_path)
    out = tmp_path / "out"
    cmd = ["eval", "beir", str(data), "--index-root", str(tmp_path / "idx"),
           "--out", str(out), "--hybrid", "rrf:bm25+splade+dense", "--hybrid", "weighted:splade=0.5,dense=0.5",
           "--metrics", "ndcg@10,recall@100,mrr@10", "--quiet"]
    proc = run_cli(*cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "tiny" / "summary.json").read_text())
    methods = {m["method"]: m for m in summary["methods"]}
    assert set(methods) == {"bm25", "splade", "dense", "rrf:bm25+splade+dense", "weighted:splade=0.5,dense=0.5"}
    assert all(m["queries"] == 4 for m in methods.values())
    assert all(0.0 < m["scores"]["ndcg@10"] <= 1.0 for m in methods.values())
    assert methods["splade"]["p_vs_bm25"] is not None and methods["bm25"]["p_vs_bm25"] is None
    run_lines = (out / "tiny" / "rrf_bm25_splade_dense.trec").read_text().splitlines()
    assert {line.split()[0] for line in run_lines} == {"1", "2", "3", "4"}
    per_query = json.loads((out / "tiny" / "bm25.metrics.json").read_text())
    assert set(per_query) == {"ndcg@10", "recall@100", "mrr@10"} and len(per_query["ndcg@10"]) == 4
    board = (out / "leaderboard.md").read_text()
    assert "| rrf:bm25+splade+dense |" in board and "Wall-clock time" in board
    assert (out / "leaderboard.csv").read_text().startswith("method,tiny,average")
    assert (out / "quality_vs_latency.png").read_bytes()[:4] == b"\x89PNG"

    # A second run reuses the index (manifest matches the corpus checksum and models) and tunes by CV.
    # The PRF and query-adaptive methods run too (CI's smoke evaluation of each).
    new_methods = ["bm25+rm3", "bm25+rocchio", "dense+average", "dense+rocchio", "qpp:bm25+splade+dense"]
    proc = run_cli(*cmd[:-1], "--tune", "--folds", "2", "--retrievers", "splade,dense", "--quiet",
                   *[arg for m in new_methods for arg in ("--method", m)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reusing index beir-tiny" in proc.stderr
    summary = json.loads((out / "tiny" / "summary.json").read_text())
    tuned = [m for m in summary["methods"] if "tuned, 2-fold CV" in m["method"]]
    assert len(tuned) == 1 and len(tuned[0]["tuned_weights"]) == 2
    assert tuned[0]["method"] == "weighted:splade+dense:minmax [tuned, 2-fold CV held-out]"
    assert any(m["method"] == "weighted:splade=0.5,dense=0.5" for m in summary["methods"])  # fixed weights kept
    by_name = {m["method"]: m for m in summary["methods"]}
    for method in new_methods[:4]:
        assert 0.0 < by_name[method]["scores"]["ndcg@10"] <= 1.0 and by_name[method]["search_ms"] > 0
        assert by_name[method]["p_vs_best_single"] is not None  # this run scores no plain bm25
    assert by_name["dense+average"]["base"] == "dense" and by_name["dense+average"]["p_vs_base"] is not None
    qpp = by_name["qpp:bm25+splade+dense:minmax [QPP-weighted (nqc, margin, agreement), 2-fold CV held-out]"]
    assert len(qpp["tuned_adaptive"]) == 3  # one fit per fold, then one on every query for serving
    assert set(qpp["tuned_adaptive"][-1]["coefficients"]) == {"nqc", "margin", "agreement"}
    assert qpp["queries"] == 4


def test_bad_dataset_is_one_line(tmp_path: Path) -> None:
    """The console script's own process (``python -m service.cli``): a user error is one line, exit status 2."""
    proc = subprocess.run([sys.executable, "-m", "service.cli", "eval", "beir", str(tmp_path / "none"),
                           "--index-root", str(tmp_path / "idx")], capture_output=True, text=True)
    assert proc.returncode == 2 and "hybrid: error:" in proc.stderr and "Traceback" not in proc.stderr


