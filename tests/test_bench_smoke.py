"""Seconds-long smoke run of ``hybrid bench`` (the real benchmark is a script, never a timed test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.test_eval import make_dataset


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
    assert "## Qdrant Edge on the same vectors" in (out / "bench.md").read_text()
    assert report["http"]["load"]["2"]["errors"] == 0 and report["http"]["load"]["2"]["requests"] > 0
    assert "## Baselines on the same inputs" in (out / "bench.md").read_text()
