"""Dense encoding with sentence-transformers: L2-normalized float32 vectors.

Normalizing here makes FAISS inner product equal to cosine similarity for every index type.
``encode_query``/``encode_document`` apply the model's own prompts (e5, bge, ...) when it has them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrieval.encoders.gpu.collect import DensePipeline
from retrieval.encoders.gpu.paths import GpuPaths
from retrieval.encoders.models import ResolvedModel, load_model
from retrieval.encoders.onnx_query import OnnxQueries
from retrieval.encoders.st_forward import embed_one, plain_query_forward


class DenseEncoder(GpuPaths, OnnxQueries):
    _sparse = False
    _pipeline_type = DensePipeline

    def __init__(self, model: ResolvedModel, device: str = "cpu", max_length: int | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.model_info = model
        self.device = device
        self._model = load_model(SentenceTransformer, model, device)
        if max_length is not None:
            self._model.max_seq_length = max_length
        if device.startswith("cuda"):
            self._model.half()
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dimension = int(get_dim() or 0)
        self._lock = threading.Lock()
        # One query skips encode_query's batching machinery (same vector); benchmarks may turn it off.
        self.single_query_fast_path = plain_query_forward(self._model)
        self._init_gpu_paths(device)

    @property
    def model(self) -> Any:
        """The sentence-transformers model underneath (for checks against its own ``encode``)."""
        return self._model

    def _encode(self, texts: Sequence[str], *, query: bool, batch_size: int) -> np.ndarray:
        if query and len(texts) == 1 and self.single_query_fast_path:
            with self._lock:
                graphs = self.query_graphs()
                embedding = graphs.encode(texts[0]) if graphs is not None else None
                if embedding is None:
                    embedding = embed_one(self._model, texts[0])
            vector = torch.nn.functional.normalize(embedding.float(), p=2, dim=0).cpu().numpy()
            return np.ascontiguousarray(vector[None, :], dtype=np.float32)
        pipeline = self.pipeline() if len(texts) > 1 or not query else None
        if pipeline is not None:
            return pipeline.encode(list(texts))
        fn = self._model.encode_query if query else self._model.encode_document
        with self._lock:
            vectors = fn(
                list(texts),
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_documents(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return self._encode(texts, query=False, batch_size=batch_size)

    def encode_documents_stream(self, chunks: Iterable[Sequence[str]], batch_size: int = 32) -> Iterator[np.ndarray]:
        """One ``[n, D]`` array per chunk; on the GPU the chunks stream through one pipeline run."""
        pipeline = self.pipeline()
        if pipeline is not None:
            yield from pipeline.encode_stream(list(c) for c in chunks)
            return
        for chunk in chunks:
            yield self.encode_documents(chunk, batch_size=batch_size)

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None

    def encode_queries(self, texts: Sequence[str], batch_size: int = 32, runtime: str = "torch",
                       cache: Path | None = None) -> np.ndarray:
        """``runtime`` "onnx" or "onnx-int8" runs the exported graph (cached under ``cache``) on ONNX Runtime."""
        if runtime != "torch":
            assert cache is not None, "ONNX query modes need a cache folder"
            if not plain_query_forward(self._model):
                texts = [self._query_prompt() + t for t in texts]
            vectors = self._onnx(runtime, cache).embed(texts, batch_size)
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            return np.ascontiguousarray(vectors, dtype=np.float32)
        return self._encode(texts, query=True, batch_size=batch_size)

    def _query_prompt(self) -> str:
        return str((getattr(self._model, "prompts", None) or {}).get("query") or "")

    def encode_query(self, text: str) -> np.ndarray:
        """One L2-normalized float32 vector (1-D)."""
        return self.encode_queries([text], batch_size=1)[0]
