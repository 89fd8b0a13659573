"""The pipeline's last stage: what a model's outputs are, and how they come back as results.

The two kinds of the pipeline (``run.Pipeline``) live here: the dense one mean-pools and normalizes on the
device and hands back float32 rows; the sparse one (SPLADE) quantizes and takes a top-k on the device
(``quantize_topk``), so that only ``(term ids, impacts)`` cross to the host, where ``sparse_rows`` turns them
into per-text results and finds the rare text to redo exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from retrieval.encoders.gpu.batching import Chunk
from retrieval.encoders.gpu.run import Pipeline
from retrieval.encoders.gpu.tokenize import UnsupportedModel


def quantize_topk(pooled: torch.Tensor, scale: float, cap: int,
                  sort: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SPLADE weights ``[B, V]`` -> ``(impacts, term ids, nonzero counts)`` with at most ``cap`` terms a row.

    Impacts are ``round(w * scale)`` computed in float64 with round-half-to-even, which is exactly what
    ``sparse.quantize`` does in Python; rows are sorted by impact, heaviest first (unless ``sort`` is
    False: then a row's positive impacts come back in no particular order, which is cheaper).
    """
    impacts = torch.round(pooled.double() * scale).to(torch.int32)
    nonzero = (impacts > 0).sum(dim=1, dtype=torch.int32)
    values, ids = torch.topk(impacts, min(cap, impacts.shape[1]), dim=1, sorted=sort)
    return values, ids.to(torch.int32), nonzero


def sparse_rows(values: np.ndarray, ids: np.ndarray, nonzero: np.ndarray,
                top_k: int | None) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[int]]:
    """Host side of ``quantize_topk``: per row ``(term ids, impacts)``, and rows that need an exact redo.

    A row is exact when every positive impact came back, or (with ``top_k``) when the heaviest ``top_k``
    and every term tied with the last of them came back. Ties at the cut are left in: the caller breaks
    them by token, as ``sparse.quantize`` does.
    """
    cap = values.shape[1]
    out: list[tuple[np.ndarray, np.ndarray]] = []
    redo: list[int] = []
    for row in range(values.shape[0]):
        count = int(nonzero[row])
        if count <= cap:
            if top_k is None:  # maybe unsorted: take the positive ones wherever they are
                keep = values[row] > 0
                out.append((ids[row][keep], values[row][keep]))
            else:
                out.append((ids[row, :count], values[row, :count]))
            continue
        if top_k is not None and top_k < cap and values[row, top_k - 1] > values[row, cap - 1]:
            keep = int(np.searchsorted(-values[row], -values[row, top_k - 1], side="right"))
            out.append((ids[row, :keep], values[row, :keep]))
            continue
        out.append((ids[row, :0], values[row, :0]))
        redo.append(row)
    return out, redo


def _module_config(module: Any) -> dict[str, Any]:
    get = getattr(module, "get_config_dict", None)
    return dict(get()) if callable(get) else {}


class DensePipeline(Pipeline):
    """Mean-pooled, L2-normalized float32 vectors ``[N, D]`` (the dense encoder's output)."""

    def __init__(self, st_model: Any, **kwargs: Any) -> None:
        modules = list(st_model)
        if len(modules) < 2:
            raise UnsupportedModel("expected Transformer + Pooling modules")
        pooling = _module_config(modules[1])
        mean = pooling.get("pooling_mode_mean_tokens") or pooling.get("pooling_mode") == "mean"
        others = [type(m).__name__ for m in modules[2:] if type(m).__name__ != "Normalize"]
        if not mean or others or sum(bool(v) for k, v in pooling.items() if k.startswith("pooling_mode_")) > 1:
            raise UnsupportedModel(f"only mean pooling (+ Normalize) is reproduced, not {pooling} {others}")
        super().__init__(st_model, **kwargs)
        get_dim = getattr(st_model, "get_embedding_dimension", None) or st_model.get_sentence_embedding_dimension
        self.dimension = int(get_dim())

    @classmethod
    def from_model(cls, st_model: Any, **kwargs: Any) -> DensePipeline:
        return cls(st_model, **kwargs)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden = self._net(ids, mask)
        weights = mask.unsqueeze(-1).to(torch.float32)
        summed = (hidden.float() * weights).sum(dim=1)
        pooled = summed / weights.sum(dim=1).clamp(min=1e-9)
        return (torch.nn.functional.normalize(pooled, p=2, dim=1),)

    def _new_result(self, n: int) -> Any:
        return np.empty((n, self.dimension), dtype=np.float32)

    def _absorb(self, chunk: Chunk, index: np.ndarray, host: tuple[np.ndarray, ...]) -> None:
        chunk.rows[index] = host[0]

    def _join(self, parts: list[Any], n: int) -> np.ndarray:
        return np.concatenate(parts) if parts else np.empty((0, self.dimension), dtype=np.float32)


class SparsePipeline(Pipeline):
    """SPLADE: per text ``(term ids, impacts)`` (int32, heaviest first), quantized as ``sparse.quantize``.

    With ``top_k`` the heaviest ``top_k`` terms come back plus any tied with the last of them (the
    encoder breaks those ties by token). ``cap`` is how many terms a text may bring back from the GPU
    before it is redone exactly; it doubles (up to the vocabulary) whenever a text overflows it.
    """

    _sparse = True

    def __init__(self, st_model: Any, *, scale: float = 100.0, top_k: int | None = None, cap: int | None = None,
                 **kwargs: Any) -> None:
        modules = list(st_model)
        if len(modules) != 2:
            raise UnsupportedModel("expected MLMTransformer + SpladePooling")
        pooling = _module_config(modules[1])
        strategy = pooling.get("pooling_strategy", "max")
        activation = pooling.get("activation_function", "relu")
        if strategy != "max" or activation != "relu" or type(modules[1]).__name__ != "SpladePooling":
            raise UnsupportedModel(f"only SPLADE max pooling with relu is reproduced, not {pooling}")
        super().__init__(st_model, **kwargs)
        self.scale, self.top_k = float(scale), top_k
        self.cap = int(cap or ((top_k + 64) if top_k else 512))
        self.redone = 0
        self.vocab_size = int(self.net.config.vocab_size)

    @classmethod
    def from_model(cls, st_model: Any, **kwargs: Any) -> SparsePipeline:
        return cls(st_model, **kwargs)

    def configure(self, scale: float, top_k: int | None) -> None:
        """Quantization for the next calls (the encoder sets it per call, under its own lock)."""
        if (float(scale), top_k) != (self.scale, self.top_k):
            self.scale, self.top_k = float(scale), top_k
            self.cap = int((top_k + 64) if top_k else max(self.cap, 512))

    def _pooled(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self._net(ids, mask)
        # max over tokens commutes with the monotonic log1p(relu(.)), so pool first: one pass over [B, L, V]
        logits.masked_fill_(mask[:, :, None] == 0, float("-inf"))
        return torch.log1p(torch.relu(logits.amax(dim=1)))

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self._pooled(ids, mask),)

    def _post(self, outputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        # quantization and the top-k stay eager: ``cap`` and ``top_k`` change between calls
        return quantize_topk(outputs[0], self.scale, self.cap, sort=self.top_k is not None)

    def _new_result(self, n: int) -> Any:
        return [None] * n

    def _absorb(self, chunk: Chunk, index: np.ndarray, host: tuple[np.ndarray, ...]) -> None:
        rows, redo = sparse_rows(host[0], host[1], host[2], self.top_k)
        for position, row in zip(index.tolist(), rows):
            chunk.rows[position] = row
        if redo:
            self.redone += len(redo)
            self.cap = min(self.cap * 2, self.vocab_size)
            for r in redo:
                chunk.rows[int(index[r])] = self._exact(chunk.texts[int(index[r])])

    def _exact(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """One text with every positive impact (the rare overflow of ``cap``), synchronously."""
        ids, lengths = self.tokenizers.submit([text], 1)[0].result()
        host_ids, host_lens = self._batch_inputs(ids, np.zeros(1, np.int64), lengths, np.zeros(1, np.int64))
        with torch.inference_mode():
            ids_t = host_ids.to(self.device).long()
            mask = (torch.arange(ids_t.shape[1], device=self.device)[None, :]
                    < host_lens.to(self.device)[:, None]).long()
            values, terms, _ = quantize_topk(self._pooled(ids_t, mask), self.scale, 1 << 30)
        values, terms = values[0].cpu().numpy(), terms[0].cpu().numpy()
        keep = values > 0
        return terms[keep], values[keep]

    def _join(self, parts: list[Any], n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return [row for part in parts for row in part]
