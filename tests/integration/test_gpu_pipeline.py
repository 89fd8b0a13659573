"""The GPU encoding pipeline on the CPU device against the existing encoders, with the real models (CI has no GPU).
Its arithmetic on synthetic inputs (batch planner, quantization, top-k) is tests/unit/test_gpu_batching.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval.encoders.gpu.collect import DensePipeline, SparsePipeline
from retrieval.encoders.sparse import Quantization
from tests.support import cranfield_docs

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


@pytest.fixture(scope="module")
def dense_vectors(dense_encoder) -> np.ndarray:  # type: ignore[no-untyped-def]
    """TEXTS encoded by the default (non-pipeline) path: what every pipeline run must give."""
    return dense_encoder.encode_documents(TEXTS)


@pytest.mark.slow  # the 43 texts encoded by the real models, through the pipeline and the default path
def test_dense_pipeline_on_cpu_equals_the_encoder(dense_encoder, dense_vectors) -> None:  # type: ignore[no-untyped-def]
    want = dense_vectors
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


@pytest.mark.slow  # the 43 texts encoded by the real models, through the pipeline and the default path
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


@pytest.mark.slow  # the 43 texts encoded by the real models, through the pipeline and the default path
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


@pytest.mark.slow  # the 43 texts encoded by the real models, through the pipeline and the default path
def test_encoders_route_batches_through_the_pipeline(dense_encoder, splade_encoder,  # type: ignore[no-untyped-def]
                                                    dense_vectors) -> None:
    """What --device cuda switches on, run on the CPU: same vectors as the default path."""
    quant = Quantization(scale=100.0, top_k=32)
    want_dense = dense_vectors
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
    from retrieval.encoders.gpu.tokenize import UnsupportedModel

    with pytest.raises(UnsupportedModel):
        SparsePipeline.from_model(dense_encoder.model, workers=0)


@pytest.mark.parametrize("sparse", [False, True])
def test_unmasked_query_forward_equals_the_model(dense_encoder, splade_encoder, sparse) -> None:  # type: ignore[no-untyped-def]
    """The forward the CUDA graphs capture gives the eager single-query vector."""
    from retrieval.encoders.gpu.query import _bert_parts, unmasked_forward
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


