"""The GPU encoding pipeline's parts that run on the CPU: the batch planner, the quantization and top-k
math, and the whole pipeline on the CPU device against the existing encoders (CI has no GPU)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from retrieval.encoders.gpu_pipeline import DensePipeline, SparsePipeline, plan_batches, quantize_topk, sparse_rows
from retrieval.encoders.sparse import Quantization, quantize
from tests.conftest import cranfield_docs

TEXTS = [f"{d['title']} {d['text']}".strip() for d in cranfield_docs(40)] + ["", "x", "  wing  flutter  "]


@pytest.fixture(scope="module")
def dense_encoder():  # type: ignore[no-untyped-def]
    from retrieval.encoders.dense import DenseEncoder
    from retrieval.encoders.models import resolve_model

    return DenseEncoder(resolve_model("all-MiniLM-L6-v2"))


@pytest.fixture(scope="module")
def splade_encoder():  # type: ignore[no-untyped-def]
    from retrieval.encoders.models import resolve_model
    from retrieval.encoders.sparse import SpladeEncoder

    return SpladeEncoder(resolve_model("splade-tiny"))


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
    from retrieval.encoders.gpu_graphs import bucket_rows, bucket_width, bucket_widths

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
    from retrieval.encoders.gpu_graphs import small_shape, small_shapes

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


def test_dense_pipeline_on_cpu_equals_the_encoder(dense_encoder) -> None:  # type: ignore[no-untyped-def]
    want = dense_encoder.encode_documents(TEXTS)
    pipe = DensePipeline.from_model(dense_encoder.model, dtype="fp32", token_budget=2048, workers=0)
    try:
        got = pipe.encode(TEXTS)
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=2e-5)
        parts = list(pipe.encode_stream([TEXTS[:7], TEXTS[7:8], [], TEXTS[8:]]))
        assert [len(p) for p in parts] == [7, 1, 0, len(TEXTS) - 8]
        np.testing.assert_allclose(np.concatenate(parts), want, atol=2e-5)
    finally:
        pipe.close()


@pytest.mark.parametrize("top_k", [None, 16])
def test_sparse_pipeline_on_cpu_equals_the_encoder(splade_encoder, top_k) -> None:  # type: ignore[no-untyped-def]
    quant = Quantization(scale=100.0, top_k=top_k)
    want = splade_encoder.encode_documents(TEXTS, quant)
    pipe = SparsePipeline.from_model(splade_encoder.model, dtype="fp32", token_budget=2048, workers=0, cap=64)
    try:
        pipe.configure(scale=100.0, top_k=top_k)
        got = splade_encoder._vectors(pipe.encode(TEXTS), top_k)
        assert got == want
    finally:
        pipe.close()


def test_sparse_pipeline_redoes_texts_over_the_cap(splade_encoder) -> None:  # type: ignore[no-untyped-def]
    quant = Quantization(scale=100.0)
    want = splade_encoder.encode_documents(TEXTS[:6], quant)
    pipe = SparsePipeline.from_model(splade_encoder.model, dtype="fp32", workers=0, cap=8)
    try:
        got = splade_encoder._vectors(pipe.encode(TEXTS[:6]), None)
        assert got == want and pipe.redone > 0 and pipe.cap > 8
    finally:
        pipe.close()


@pytest.mark.parametrize("compiled", [True, False])
def test_pipeline_with_tokenizer_workers(dense_encoder, compiled: bool) -> None:  # type: ignore[no-untyped-def]
    """Compiled WordPiece in threads for the built-in (BERT-style) tokenizers; ``tokenizers`` in processes else."""
    pipe = DensePipeline.from_model(dense_encoder.model, dtype="fp32", workers=2, piece=7, compiled_tokenizer=compiled)
    try:
        assert pipe.tokenizers.kind == ("wordpiece threads" if compiled else "tokenizers processes")
        texts = TEXTS + ["a café", "[MASK] written out"]  # two texts the compiled tokenizer hands to the library
        np.testing.assert_allclose(pipe.encode(texts), dense_encoder.encode_documents(texts), atol=2e-5)
        if compiled:
            assert pipe.tokenizers.wordpiece is not None and pipe.tokenizers.wordpiece.fallback_texts == 2
    finally:
        pipe.close()


def test_encoders_route_batches_through_the_pipeline(dense_encoder, splade_encoder) -> None:  # type: ignore[no-untyped-def]
    """What --device cuda switches on, run on the CPU: same vectors as the default path."""
    quant = Quantization(scale=100.0, top_k=32)
    want_dense = dense_encoder.encode_documents(TEXTS)
    want_sparse = splade_encoder.encode_documents(TEXTS, quant)
    want_queries = splade_encoder.encode_queries(TEXTS[:5], quant)
    try:
        dense_encoder.use_pipeline = splade_encoder.use_pipeline = True
        assert dense_encoder.pipeline() is not None and splade_encoder.pipeline() is not None
        np.testing.assert_allclose(dense_encoder.encode_documents(TEXTS), want_dense, atol=2e-5)
        chunks = [TEXTS[:10], TEXTS[10:]]
        np.testing.assert_allclose(np.concatenate(list(dense_encoder.encode_documents_stream(chunks))), want_dense,
                                   atol=2e-5)
        assert splade_encoder.encode_documents(TEXTS, quant) == want_sparse
        assert sum(list(splade_encoder.encode_documents_stream(chunks, quant)), []) == want_sparse
        assert splade_encoder.encode_queries(TEXTS[:5], quant) == want_queries
    finally:
        dense_encoder.close()
        splade_encoder.close()
        dense_encoder.use_pipeline = splade_encoder.use_pipeline = False


def test_default_cpu_encoders_do_not_use_the_pipeline(dense_encoder, splade_encoder) -> None:  # type: ignore[no-untyped-def]
    assert dense_encoder.pipeline() is None and splade_encoder.pipeline() is None
    assert dense_encoder.query_graphs() is None and splade_encoder.query_graphs() is None


def test_unsupported_models_are_refused(dense_encoder) -> None:  # type: ignore[no-untyped-def]
    from retrieval.encoders.gpu_pipeline import UnsupportedModel

    with pytest.raises(UnsupportedModel):
        SparsePipeline.from_model(dense_encoder.model, workers=0)


@pytest.mark.parametrize("sparse", [False, True])
def test_unmasked_query_forward_equals_the_model(dense_encoder, splade_encoder, sparse) -> None:  # type: ignore[no-untyped-def]
    """The forward the CUDA graphs capture gives the eager single-query vector."""
    from retrieval.encoders.gpu_query import _bert_parts, unmasked_forward
    from retrieval.encoders.st_forward import embed_one

    model = (splade_encoder if sparse else dense_encoder).model
    text = "heat transfer in laminar boundary layers"
    ids = torch.tensor([model.tokenizer(text)["input_ids"]])
    with torch.inference_mode():
        got = unmasked_forward(_bert_parts(model[0].auto_model), ids, sparse)
        want = embed_one(model, text).float()
    if not sparse:
        want = torch.nn.functional.normalize(want, dim=0)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_tokenizer_module_imports_without_torch() -> None:
    code = "import sys, retrieval.encoders.gpu_tokenize; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_switch_interval_is_short_while_pipelines_stream_and_restored_after() -> None:
    """Two pipelines streaming at once share one change of the interpreter's setting; the last one out restores it."""
    import sys

    from retrieval.encoders import gpu_pipeline

    before = sys.getswitchinterval()
    short = min(before, gpu_pipeline.SWITCH_INTERVAL)
    with gpu_pipeline._short_switch_interval():
        assert sys.getswitchinterval() == short
        with gpu_pipeline._short_switch_interval():
            assert sys.getswitchinterval() == short
        assert sys.getswitchinterval() == short  # the other pipeline still streams
    assert sys.getswitchinterval() == before
