"""The GPU encoding pipeline's arithmetic, on the CPU and on synthetic inputs: the batch planner and the graphs' shapes,
the quantization and top-k math, the tokenizer module's imports, the interpreter's switch interval. The pipeline run
on the real models is tests/integration/test_gpu_pipeline.py."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from retrieval.encoders.gpu.batching import plan_batches
from retrieval.encoders.gpu.collect import quantize_topk, sparse_rows
from retrieval.encoders.sparse import Quantization, quantize


def test_plan_batches_covers_every_index_once_within_the_budget() -> None:
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 300, size=5000)
    batches = plan_batches(lengths, token_budget=4096, max_batch=64)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(5000))
    for batch in batches:
        assert len(batch) <= 64
        assert len(batch) * lengths[batch].max() <= 4096 or len(batch) == 1
        assert lengths[batch[0]] == lengths[batch].max()  # padded to its first member
    firsts = [lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True)  # longest first



def test_bucketed_batches_have_the_shapes_the_graphs_hold() -> None:
    """With a width step, every full batch of one padded width has that width's row count (one graph each)."""
    from retrieval.encoders.gpu.graphs import bucket_rows, bucket_width, bucket_widths

    assert bucket_widths(256, 32) == [32, 64, 96, 128, 160, 192, 224, 256]
    assert bucket_widths(100, 32) == [32, 64, 96, 100]
    assert [bucket_width(n, 100, 32) for n in (0, 1, 32, 33, 96, 97, 100)] == [32, 32, 32, 64, 96, 100, 100]
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 257, size=5000)
    batches = plan_batches(lengths, 8192, 4096, step=32, max_width=256)
    assert sorted(np.concatenate(batches).tolist()) == list(range(5000))
    partial = 0
    for batch in batches:
        width = bucket_width(int(lengths[batch].max()), 256, 32)
        assert len(batch) * width <= 8192 and lengths[batch].max() <= width
        partial += len(batch) != bucket_rows(width, 8192, 4096)
    assert partial == 1  # only the last batch (the shortest texts) is not full



def test_a_few_short_texts_get_the_smallest_shape_that_holds_them() -> None:
    from retrieval.encoders.gpu.graphs import small_shape, small_shapes

    assert small_shape(1, 5) == (1, 16) and small_shape(3, 17) == (4, 32) and small_shape(32, 64) == (32, 64)
    assert small_shape(33, 5) is None and small_shape(2, 65) is None
    assert (32, 64) in small_shapes(512) and all(w <= 32 for _, w in small_shapes(32))



def test_plan_batches_edge_cases() -> None:
    assert plan_batches(np.array([], dtype=int), 100) == []
    assert [b.tolist() for b in plan_batches(np.array([500, 3]), 100)] == [[0], [1]]  # over-budget text alone
    assert [b.tolist() for b in plan_batches(np.array([0, 0]), 100)] == [[0, 1]]



@pytest.mark.parametrize("top_k", [None, 1, 5, 20])
def test_quantize_topk_equals_quantize(top_k: int | None) -> None:
    rng = np.random.default_rng(top_k or 0)
    vocab = np.array([f"t{i:03d}" for i in range(300)], dtype=object)
    weights = np.maximum(rng.normal(0, 0.05, size=(12, 300)), 0).astype(np.float32)
    weights[:, :40] = 0.031  # many ties at the cut
    weights[3] = 0.0  # an empty row
    values, ids, nonzero = quantize_topk(torch.from_numpy(weights), 100.0, cap=(top_k + 8) if top_k else 300)
    rows, redo = sparse_rows(values.numpy(), ids.numpy(), nonzero.numpy(), top_k)
    assert len(redo) < 4  # only rows whose tie at the cut runs past the cap are redone (exactly, elsewhere)
    for r, (term_ids, impacts) in enumerate(rows):
        if r in redo:
            continue
        got = dict(zip(vocab[term_ids].tolist(), impacts.tolist()))
        if top_k is not None and len(got) > top_k:
            got = dict(sorted(got.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k])
        want = quantize({vocab[c]: float(weights[r, c]) for c in range(300) if weights[r, c] > 0},
                        Quantization(scale=100.0, top_k=top_k))
        assert got == want



def test_quantize_rounds_half_to_even_in_float64_like_python() -> None:
    weights = torch.tensor([[0.005, 0.015, 0.025, 0.0049999, 1.235]], dtype=torch.float32)
    values, ids, _ = quantize_topk(weights, 100.0, cap=5)
    got = dict(zip(ids[0].tolist(), values[0].tolist()))
    want = {i: int(round(float(w) * 100.0)) for i, w in enumerate(weights[0].tolist())}
    assert {k: v for k, v in got.items() if v > 0} == {k: v for k, v in want.items() if v > 0}



def test_sparse_rows_flags_rows_over_the_cap() -> None:
    weights = torch.full((2, 50), 0.5)
    weights[1, 10:] = 0
    values, ids, nonzero = quantize_topk(weights, 100.0, cap=16)
    rows, redo = sparse_rows(values.numpy(), ids.numpy(), nonzero.numpy(), None)
    assert redo == [0] and len(rows[1][0]) == 10
    # with top_k and a tie group running past the cap, the row is redone too
    rows, redo = sparse_rows(values.numpy(), ids.numpy(), nonzero.numpy(), 4)
    assert redo == [0]



def test_tokenizer_module_imports_without_torch() -> None:
    code = "import sys, retrieval.encoders.gpu.tokenize; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)



def test_the_switch_interval_is_short_while_pipelines_stream_and_restored_after() -> None:
    """Two pipelines streaming at once share one change of the interpreter's setting; the last one out restores it."""
    import sys

    from retrieval.encoders.gpu import run as gpu_run

    before = sys.getswitchinterval()
    short = min(before, gpu_run.SWITCH_INTERVAL)
    with gpu_run._short_switch_interval():
        assert sys.getswitchinterval() == short
        with gpu_run._short_switch_interval():
            assert sys.getswitchinterval() == short
        assert sys.getswitchinterval() == short  # the other pipeline still streams
    assert sys.getswitchinterval() == before
