"""The torch flat search (issue 12, item 5) against FAISS's flat index, on the CPU: same hits, same view rules.

On CUDA the same code runs with the matrix on the GPU (``dense_flat_search="auto"``); the speed is measured by
``eval/bench/gpu_flat.py`` on a lent GPU, never here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indexes.storage.faiss import backend as faiss_backend
from indexes.storage.faiss.backend import FaissIndex
from indexes.storage.faiss.torch_flat import TorchFlat
from retrieval.core.options import OpenOptions
from retrieval.core.settings import Settings
from retrieval.search.pipeline import Searcher
from tests.support import CRANFIELD


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _pair(tmp_path: Path, vectors: np.ndarray, dtype: str = "fp32", flat: str = "torch") -> tuple[FaissIndex, FaissIndex]:
    faiss_backend.save(faiss_backend.build(vectors, "Flat"), tmp_path)
    return (faiss_backend.FaissIndex(tmp_path, flat="faiss"),
            faiss_backend.FaissIndex(tmp_path, flat=flat, flat_dtype=dtype))


@pytest.mark.parametrize("flat, engine", [("torch", "torch-fp32-cpu"), ("numba", "numba-cpu")])
def test_flat_searchers_equal_faiss_flat_through_writes_views_and_compaction(tmp_path: Path, flat: str,
                                                                             engine: str) -> None:
    """The torch mirror and the compiled loop over FAISS's own rows (flat_kernel.py) give FAISS's hits and scores."""
    rng = np.random.default_rng(3)
    vectors = _unit(rng, 1200, 48)
    ref, ours = _pair(tmp_path, vectors[:1000], flat=flat)
    assert (ref.engine, ours.engine) == ("faiss-cpu", engine)
    queries = _unit(rng, 30, 48)

    def same(*args, **kwargs) -> np.ndarray:  # type: ignore[no-untyped-def]
        want_scores, want = ref.search(*args, **kwargs)
        got_scores, got = ours.search(*args, **kwargs)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)
        return got

    same(queries, 10)
    same(queries[:1], 1000)  # every row, best first
    for index in (ref, ours):
        index.add(vectors[1000:], np.arange(1000, 1200))
    live = np.ones(1200, dtype=bool)
    live[::4] = False
    got = same(queries, 10, bound=1200, bitmap=np.packbits(live, bitorder="little"))
    assert live[got].all()
    early = same(vectors[1000:1010], 10, bound=1000)  # a view from before the append
    assert (early < 1000).all()
    allowed = np.zeros(1200, dtype=bool)
    allowed[rng.choice(1200, 15, replace=False)] = True  # a selective filter: all its matches come back, exactly
    got_scores, got = ours.search_allowed(queries, 20, allowed)
    want_scores, want = ref.search_allowed(queries, 20, allowed)
    np.testing.assert_array_equal(got, want)
    assert (got[:, 15:] == -1).all() and allowed[got[:, :15]].all()
    for index in (ref, ours):
        assert index.compact(np.flatnonzero(~live))
    same(queries, 10)
    assert ours.ntotal == int(live.sum())
    allowed &= live  # after the compaction rows and docnos no longer line up: the filter still selects by docno
    got_scores, got = ours.search_allowed(queries, 20, allowed)
    want_scores, want = ref.search_allowed(queries, 20, allowed)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)


def test_equal_scores_come_back_by_docno(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    base = _unit(rng, 1, 16)
    vectors = np.concatenate([_unit(rng, 50, 16) * 0.5, np.repeat(base, 20, axis=0)])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    mirror = TorchFlat(vectors, np.arange(100, 170), device="cpu")
    scores, docnos = mirror.search(base, 5)
    assert docnos[0].tolist() == [150, 151, 152, 153, 154]
    np.testing.assert_allclose(scores[0], 1.0, atol=1e-6)


def test_half_precision_storage_keeps_the_ranking(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    vectors = _unit(rng, 2000, 64)
    ref, ours = _pair(tmp_path, vectors, "bf16")
    queries = vectors[rng.choice(2000, 20, replace=False)] + 0.3 * _unit(rng, 20, 64)
    want_scores, want = ref.search(queries, 10)
    got_scores, got = ours.search(queries, 10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), want.tolist())])
    assert overlap >= 0.9
    np.testing.assert_allclose(got_scores[:, 0], want_scores[:, 0], atol=2e-2)
    with pytest.raises(ValueError, match="fp16 flat search needs a GPU"):
        TorchFlat(vectors, np.arange(2000), device="cpu", dtype="fp16")


def test_other_index_types_stay_on_faiss(tmp_path: Path) -> None:
    vectors = _unit(np.random.default_rng(1), 300, 16)
    faiss_backend.save(faiss_backend.build(vectors, "HNSW16"), tmp_path)
    assert faiss_backend.FaissIndex(tmp_path, flat="torch").engine == "faiss-cpu"
    faiss_backend.save(faiss_backend.build(vectors, "Flat"), tmp_path)
    assert faiss_backend.FaissIndex(tmp_path).engine == "numba-cpu"  # auto: torch on CUDA, numba on the CPU
    empty = tmp_path / "empty"
    faiss_backend.save(faiss_backend.build(np.zeros((0, 16), dtype=np.float32), "Flat"), empty)
    scores, docnos = faiss_backend.FaissIndex(empty).search(vectors[:2], 3)  # no rows: padding only
    assert (docnos == -1).all() and np.isneginf(scores).all()
    with pytest.raises(ValueError, match="unknown dense flat search engine"):
        faiss_backend.FaissIndex(tmp_path, flat="gpu")


@pytest.mark.parametrize("flat, engine", [("torch", "torch-fp32-cpu"), ("faiss", "faiss-cpu")])
def test_searcher_with_torch_flat_search_ranks_as_faiss(small_index: Path, searcher: Searcher, flat: str,
                                                         engine: str) -> None:
    """The default searcher (numba on the CPU) ranks as the torch mirror and as FAISS's own flat kernel."""
    options = OpenOptions.from_settings(Settings(dense_flat_search=flat), verify="off")
    assert options.dense_flat_search == flat
    torch_searcher = Searcher.open(small_index, options, retrievers=["dense"])
    try:
        assert searcher.searchers["dense"].index.engine == "numba-cpu"
        assert torch_searcher.searchers["dense"].index.engine == engine
        for query in ("boundary layer transition", "heat transfer in hypersonic flow", "wing flutter"):
            got = torch_searcher.search(query, k=10, retrievers=["dense"]).hits
            want = searcher.search(query, k=10, retrievers=["dense"]).hits
            assert [h.id for h in got] == [h.id for h in want]
            np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-5)
    finally:
        torch_searcher.close()


def test_gpu_flat_bench_runs_its_cpu_smoke_version(tmp_path: Path) -> None:
    """The GPU benchmark's code paths, on the CPU (no bandwidth bound, no FAISS GPU): a report with every row."""
    import json
    import subprocess
    import sys

    out = tmp_path / "flat.json"
    subprocess.run([sys.executable, "-m", "eval.bench.gpu_flat", "speed", "--device", "cpu", "--docs", "3000",
                    "--repeats", "20", "--batch", "8", "--dtypes", "fp32,bf16", "--out", str(out)], check=True,
                   capture_output=True, timeout=300)
    rows = json.loads(out.read_text())["speed"]["rows"]
    assert [(r["engine"], r["dtype"]) for r in rows] == [("torch (ours)", "fp32"), ("torch (ours)", "bf16")]
    assert rows[0]["recall_at_k_vs_first"] == 1.0 and rows[1]["recall_at_k_vs_first"] >= 0.8
    assert all(r["p50_ms"] > 0 for r in rows)


def test_resampled_texts_are_real_text_without_exact_copies() -> None:
    from eval.bench.gpu_flat import resampled_texts

    corpus = CRANFIELD / "corpus.jsonl.gz"
    texts = resampled_texts(corpus, 3000, seed=13)
    assert texts == resampled_texts(corpus, 3000, seed=13)  # seeded
    assert len(set(texts)) >= 0.95 * len(texts)


def test_flat_kernel_scores_do_not_depend_on_position_or_batch(tmp_path: Path) -> None:
    """A row's score is the same wherever it sits (a shard holds a suffix of the rows) and however many queries are
    searched at once: sharded, unsharded, single and batched searches agree to the bit."""
    rng = np.random.default_rng(9)
    vectors, queries = _unit(rng, 3000, 384), _unit(rng, 40, 384)
    faiss_backend.save(faiss_backend.build(vectors, "Flat"), tmp_path / "all")
    faiss_backend.save(faiss_backend.build(vectors[7:], "Flat"), tmp_path / "tail")
    whole, tail = faiss_backend.FaissIndex(tmp_path / "all"), faiss_backend.FaissIndex(tmp_path / "tail")
    assert whole.engine == tail.engine == "numba-cpu"
    scores, docnos = whole.search(queries, 3000)
    tail_scores, tail_docnos = tail.search(queries, 3000 - 7)
    for q in range(len(queries)):
        by_docno = dict(zip(docnos[q].tolist(), scores[q].tolist()))
        assert all(by_docno[d + 7] == s for d, s in zip(tail_docnos[q].tolist(), tail_scores[q].tolist()))
        single_scores, single = whole.search(queries[q:q + 1], 3000)
        np.testing.assert_array_equal(single[0], docnos[q])
        np.testing.assert_array_equal(single_scores[0], scores[q])


def test_flat_cpu_bench_runs_and_agrees_with_faiss(tmp_path: Path) -> None:
    import faiss
    import torch

    from eval.bench import flat_cpu

    out = tmp_path / "flat.json"
    # The benchmark gives its process one OpenMP thread, torch's included (one runtime): give the threads back, or
    # every later query vector of this process differs in its last bits from a two-thread server's (test_ray).
    threads = torch.get_num_threads()
    try:
        flat_cpu.main(["--docs", "600", "--queries", "20", "--batch", "8", "--out", str(out)])
    finally:
        faiss.omp_set_num_threads(threads)
        torch.set_num_threads(threads)
    row = json.loads(out.read_text())["rows"][0]
    assert row["overlap_at_k"] == 1.0 and row["max_score_difference"] < 1e-5 and row["ours_p50_ms"] > 0
