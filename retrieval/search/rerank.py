"""Second stage: a sentence-transformers ``CrossEncoder`` re-scores the fused top hits.

A cross-encoder reads query and document together, so it ranks better than any first-stage score and
costs one forward pass per (query, document) pair: it runs on the fused top ``depth`` only. Pairs of all
queries of a batch go through one ``predict`` call (batched, on the GPU when the device is CUDA). Models
resolve as the encoders do (built-in name, folder, or hub id where the hub is reachable), e.g.
``cross-encoder/ms-marco-MiniLM-L6-v2`` or ``BAAI/bge-reranker-base``; none ships on PyPI for this machine.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from retrieval.core.errors import HybridError
from retrieval.encoders.models import ResolvedModel, resolve_model

MAX_DEPTH = 1000


class RerankError(HybridError, ValueError):
    """A rerank request that cannot run as asked; the message says what to fix."""


@dataclass(frozen=True)
class RerankConfig:
    model: str
    depth: int = 50  # fused hits re-scored; the page (offset + k) must lie within them
    batch_size: int = 32

    def check(self, needed: int) -> None:
        if not 1 <= self.depth <= MAX_DEPTH:
            raise RerankError(f"rerank depth must be between 1 and {MAX_DEPTH}, got {self.depth}")
        if needed > self.depth:
            raise RerankError(f"rerank depth {self.depth} must cover offset + k = {needed}; raise the depth")
        if self.batch_size < 1:
            raise RerankError(f"rerank batch_size must be >= 1, got {self.batch_size}")


class Reranker:
    """One loaded cross-encoder; calls are serialized (torch modules are not safe to call concurrently)."""

    def __init__(self, model: ResolvedModel, device: str) -> None:
        from sentence_transformers import CrossEncoder

        self.model_info = model
        self._model = CrossEncoder(str(model.path), device=device)
        if device.startswith("cuda"):
            self._model.half()
        self._lock = threading.Lock()

    def scores(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> list[float]:
        if not pairs:
            return []
        with self._lock:
            values: Any = self._model.predict(list(pairs), batch_size=batch_size, show_progress_bar=False)
        return [float(v) for v in values]

    def reorder(self, queries: Sequence[str], heads: Sequence[Sequence[str]], contents: Mapping[str, str],
                batch_size: int = 32) -> list[list[tuple[int, float]]]:
        """Per query, its head of document ids (``contents`` gives each one's title + text; a missing one scores
        as empty text) as ``(place in the head, cross-encoder score)``, best first; ties keep the head's order.
        Every pair of every query goes through one batched call."""
        pairs = [(queries[q], contents.get(doc_id, "")) for q, head in enumerate(heads) for doc_id in head]
        scores = iter(self.scores(pairs, batch_size))
        ranked = []
        for head in heads:
            scored = [(i, next(scores)) for i in range(len(head))]
            ranked.append(sorted(scored, key=lambda item: (-item[1], item[0])))
        return ranked


_loaded: dict[tuple[str, str, str], Reranker] = {}
_loaded_lock = threading.Lock()


def shared_reranker(name: str, device: str) -> Reranker:
    """The process's one copy of cross-encoder ``name`` on ``device``, loaded on first use."""
    model = resolve_model(name)
    key = (str(model.path), model.weights_sha256, device)
    with _loaded_lock:
        if key not in _loaded:
            try:
                _loaded[key] = Reranker(model, device)
            except (OSError, ValueError) as exc:
                raise RerankError(f"rerank model {name!r} does not load as a sentence-transformers CrossEncoder "
                                  f"({type(exc).__name__})") from None
        return _loaded[key]
