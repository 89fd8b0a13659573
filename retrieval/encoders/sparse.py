"""SPLADE encoding: log(1 + ReLU(MLM logits)), max-pooled over tokens, then integer impacts.

Lucene impact indexes store integer term frequencies, so weights are quantized with one scale
factor for documents and queries alike; a hit's score is then exactly the dot product of the two
quantized vectors, which the manifest's scale turns back into the float dot product if wanted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrieval.core.types import SparseVector
from retrieval.encoders.gpu.collect import SparsePipeline
from retrieval.encoders.gpu.paths import GpuPaths
from retrieval.encoders.models import ResolvedModel, load_model
from retrieval.encoders.onnx_query import OnnxQueries
from retrieval.encoders.st_forward import embed_one, plain_query_forward


@dataclass(frozen=True)
class Quantization:
    scale: float = 100.0
    top_k: int | None = None  # keep the top_k heaviest terms (documents only)


class SpladeEncoder(GpuPaths, OnnxQueries):
    """Wraps a sentence-transformers ``SparseEncoder`` and returns quantized term->impact maps."""

    _sparse = True
    _pipeline_type = SparsePipeline

    def __init__(self, model: ResolvedModel, device: str = "cpu", max_length: int | None = None) -> None:
        from sentence_transformers import SparseEncoder

        self.model_info = model
        self.device = device
        self._model = load_model(SparseEncoder, model, device)
        if max_length is not None:
            self._model.max_seq_length = max_length
        if device.startswith("cuda"):
            self._model.half()
        tokenizer = self._model.tokenizer
        self._vocab = np.array(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))), dtype=object)
        self._lock = threading.Lock()  # torch modules are not safe to call from several threads at once
        # One query skips encode_query's batching machinery (same vector); benchmarks may turn it off.
        self.single_query_fast_path = plain_query_forward(self._model)
        self._init_gpu_paths(device)

    def _vectors(self, rows: Sequence[tuple[np.ndarray, np.ndarray]], top_k: int | None) -> list[SparseVector]:
        """The pipeline's ``(term ids, impacts)`` as term -> impact maps, cut as ``quantize`` cuts them."""
        vocab = self._vocab
        out: list[SparseVector] = []
        for ids, impacts in rows:
            vector = dict(zip(vocab[ids].tolist(), impacts.tolist()))
            if top_k is not None and len(vector) > top_k:
                vector = dict(sorted(vector.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k])
            out.append(vector)
        return out

    def _through_pipeline(self, texts: Sequence[str], quant: Quantization) -> list[SparseVector] | None:
        pipeline = self.pipeline()
        if pipeline is None:
            return None
        pipeline.configure(scale=quant.scale, top_k=quant.top_k)
        return self._vectors(pipeline.encode(list(texts)), quant.top_k)

    def encode_documents_stream(self, chunks: Iterable[Sequence[str]], quant: Quantization,
                                batch_size: int = 32) -> Iterator[list[SparseVector]]:
        """One list of vectors per chunk; on the GPU the chunks stream through one pipeline run."""
        pipeline = self.pipeline()
        if pipeline is not None:
            pipeline.configure(scale=quant.scale, top_k=quant.top_k)
            for rows in pipeline.encode_stream(list(c) for c in chunks):
                yield self._vectors(rows, quant.top_k)
            return
        for chunk in chunks:
            yield self.encode_documents(chunk, quant, batch_size=batch_size)

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None

    @property
    def model(self) -> Any:
        """The sentence-transformers model underneath (for checks against its own ``encode``)."""
        return self._model

    def _encode(self, texts: Sequence[str], *, query: bool, batch_size: int) -> list[dict[str, float]]:
        if query and len(texts) == 1 and self.single_query_fast_path:
            with self._lock:
                graphs = self.query_graphs()
                embedding = graphs.encode(texts[0]) if graphs is not None else None
                if embedding is None:
                    embedding = embed_one(self._model, texts[0])
            terms = torch.nonzero(embedding).squeeze(1)
            vocab = self._vocab
            return [{vocab[t]: w for t, w in zip(terms.tolist(), embedding[terms].float().tolist())}]
        fn = self._model.encode_query if query else self._model.encode_document
        with self._lock:
            tensor = fn(list(texts), batch_size=batch_size, convert_to_sparse_tensor=True, show_progress_bar=False)
        tensor = tensor.coalesce().cpu()
        rows, cols = tensor.indices().numpy()
        values = tensor.values().float().numpy()
        out: list[dict[str, float]] = [{} for _ in texts]
        for row, col, value in zip(rows.tolist(), cols.tolist(), values.tolist()):
            out[row][self._vocab[col]] = value
        return out

    def encode_documents(self, texts: Sequence[str], quant: Quantization, batch_size: int = 32) -> list[SparseVector]:
        if texts and (vectors := self._through_pipeline(texts, quant)) is not None:
            return vectors
        return [quantize(v, quant) for v in self._encode(texts, query=False, batch_size=batch_size)]

    def encode_queries(self, texts: Sequence[str], quant: Quantization, batch_size: int = 32,
                       runtime: str = "torch", cache: Path | None = None) -> list[SparseVector]:
        """Queries keep every term: ``quant.top_k`` applies to documents only.

        ``runtime`` "onnx" or "onnx-int8" runs the exported graph (cached under ``cache``) on ONNX Runtime.
        """
        plain = Quantization(scale=quant.scale)
        if runtime != "torch":
            assert cache is not None, "ONNX query modes need a cache folder"
            return [quantize(self._terms(row), plain) for row in self._onnx(runtime, cache).embed(texts, batch_size)]
        if len(texts) > 1 and (vectors := self._through_pipeline(texts, plain)) is not None:
            return vectors
        return [quantize(v, plain) for v in self._encode(texts, query=True, batch_size=batch_size)]

    def encode_query(self, text: str, quant: Quantization) -> SparseVector:
        return self.encode_queries([text], quant)[0]

    @property
    def vocabulary(self) -> frozenset[str]:
        """The model's word pieces: what a sparse query vector may hold."""
        found = self.__dict__.get("_vocabulary")
        if found is None:
            found = self.__dict__["_vocabulary"] = frozenset(self._vocab.tolist())
        return found

    def _terms(self, row: np.ndarray) -> dict[str, float]:
        """One vocabulary-sized row as term -> weight over its non-zero entries."""
        ids = np.flatnonzero(row)
        return dict(zip(self._vocab[ids].tolist(), row[ids].tolist()))

    def query_tokens(self, text: str) -> list[str]:
        """The query's own word pieces, each once, in order (no special tokens): what an inference-free
        query searches for. Truncated as the encoder truncates."""
        tokenizer = self._model.tokenizer
        ids = tokenizer(text, add_special_tokens=False, truncation=True,
                        max_length=max(1, int(self._model.max_seq_length or 512) - 2))["input_ids"]
        return list(dict.fromkeys(self._vocab[ids].tolist())) if ids else []


def quantize(weights: dict[str, float], quant: Quantization) -> SparseVector:
    """Round to integers, drop zeros, keep the ``top_k`` heaviest (ties by token for determinism)."""
    impacts = {t: int(round(w * quant.scale)) for t, w in weights.items()}
    impacts = {t: i for t, i in impacts.items() if i > 0}
    if quant.top_k is not None and len(impacts) > quant.top_k:
        kept = sorted(impacts.items(), key=lambda kv: (-kv[1], kv[0]))[: quant.top_k]
        impacts = dict(kept)
    return impacts
