"""Seconds-long smoke run of ``hybrid bench`` (the real benchmark is a script, never a timed test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import make_dataset

pytestmark = pytest.mark.slow  # the benchmark scripts end to end: builds with the real models, HTTP load


def test_bench_smoke(tmp_path: Path) -> None:
    data = make_dataset(tmp_path)
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "-m", "service.cli", "bench", str(data), "--queries", "4", "--clients", "1,2",
                           "--seconds", "1", "--index-root", str(tmp_path / "idx"), "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    assert set(report["library"]) == {"bm25", "splade", "dense", "hybrid-rrf"}
    assert all(r["total"]["p50"] > 0 and r["batch_qps"] > 0 for r in report["library"].values())
    assert {"pyserini_bm25", "pyserini_impact", "raw_faiss", "bm25s", "seismic"} <= set(report["baselines"])
    assert all("latency_ms" in r for r in report["baselines"].values()), report["baselines"]
    qdrant = report["qdrant_edge"]["methods"]
    assert {"splade", "dense (exact)", "rrf(splade, dense)", "dbsf(splade, dense)"} <= set(qdrant)
    assert all(r["overlap_at_k_ties"] >= 0.99 and r["qdrant_ms"]["p50"] > 0 for n, r in qdrant.items() if "HNSW" not in n), qdrant
    assert qdrant["splade"]["max_score_gap_top_k"] < 1e-3  # the same dot products
    assert all(r["ours_batch_qps"] > 0 and r["qdrant_batch_qps"] > 0 for r in qdrant.values())
    assert "## Qdrant Edge on the same vectors" in (out / "bench.md").read_text()
    assert report["http"]["load"]["2"]["errors"] == 0 and report["http"]["load"]["2"]["requests"] > 0
    assert "## Baselines on the same inputs" in (out / "bench.md").read_text()


def test_filter_and_shard_benchmarks_smoke(small_index: Path, tmp_path: Path) -> None:
    """``eval/bench/filters.py`` and ``eval/bench/shards.py`` on 400 resampled documents: reports written, every
    filter case measured, every shard count ranking like one shard."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "queries.jsonl").write_text("".join(json.dumps({"_id": str(i), "text": q}) + "\n" for i, q in enumerate(
        ["boundary layer transition", "heat transfer to a flat plate", "wing flutter at transonic speeds"])))
    common = ["--source", str(source), "--index", str(small_index), "--docs", "400", "--queries", "3"]
    for module, extra, report in (("filters", ["--faiss", "Flat"], "filters.json"), ("shards", ["--shards", "1,2"], "shards.json")):
        out = tmp_path / module
        proc = subprocess.run([sys.executable, "-m", f"eval.bench.{module}", *common, *extra, "--work", str(tmp_path / "w"),
                               "--out", str(out)], capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        data = json.loads((out / report).read_text())
        if module == "filters":
            assert set(data["results"]) == {"none", "100%", "50%", "10% range", "10% keyword", "1%"}
            assert data["results"]["100%"]["matches"] == 400 and data["results"]["1%"]["matches"] == 4
            assert data["results"]["10% range"]["dense"]["mean_hits"] == 10.0
        else:
            assert all(r["equal_to_one"] for r in data["results"].values()), data["results"]
