"""The CUDA paths both encoders share: the streaming pipeline for batches, CUDA graphs for single queries.

Both are made at first use (a CPU encoder never imports their machinery) and either one turns itself
off for good when it cannot serve the model, leaving the sentence-transformers path, which is always
right.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from retrieval.encoders.gpu.tokenize import UnsupportedModel


class GpuPaths:
    """Mixed into an encoder that has ``_model`` (the sentence-transformers model) and ``_lock``."""

    _sparse: ClassVar[bool]
    _pipeline_type: ClassVar[Any]  # DensePipeline or SparsePipeline
    _model: Any
    _lock: threading.Lock

    def _init_gpu_paths(self, device: str) -> None:
        on_cuda = device.startswith("cuda")
        self.use_pipeline = on_cuda
        self._pipeline: Any = None
        self.use_query_graphs = on_cuda
        self._graphs: Any = None

    def query_graphs(self) -> Any:
        """The CUDA-graph query encoder (``query.GraphedQueries``), or None (CPU, or capture failed)."""
        if self.use_query_graphs and self._graphs is None:
            try:
                from retrieval.encoders.gpu.query import GraphedQueries

                self._graphs = GraphedQueries(self._model, sparse=self._sparse)
            except Exception:  # any capture problem leaves the eager path, which is always right
                self.use_query_graphs = False
        return self._graphs if self.use_query_graphs else None

    def pipeline(self) -> Any:
        """The GPU encoding pipeline, or None (CPU, or a model it does not reproduce); warmed up when made (tokenizer
        workers started, the small-batch CUDA graphs captured, the model run once), so neither a build's first chunks
        nor the first micro-batched queries wait for that."""
        if self.use_pipeline and self._pipeline is None:
            with self._lock:
                if self._pipeline is None:
                    try:
                        pipeline = self._pipeline_type.from_model(self._model)
                    except UnsupportedModel:
                        self.use_pipeline = False
                    else:
                        pipeline.warmup()
                        self._pipeline = pipeline
        return self._pipeline if self.use_pipeline else None
