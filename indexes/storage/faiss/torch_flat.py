"""Exact inner-product search as one matrix product and one top-k in torch, for flat dense indexes on a GPU.

A batch-1 flat search reads every stored vector once, so the memory bandwidth is its bound. FAISS's
``GpuIndexFlatIP`` ran 7-14x below that bound at batch 1 on an H100, while a torch matmul + top-k reached
0.71-0.96 of it (eval/bench/README.md, GPU). This mirror holds a flat index's vectors on the device:

* ``fp32``: the scores FAISS gives, to float rounding;
* ``fp16``/``bf16``: half the bytes, so about twice the speed at batch 1 and half the GPU memory; a score
  moves by about 1e-3 at most (unit vectors of 384 dimensions), which can swap near-ties.

The FAISS file stays the index of record: saves, ``reconstruct`` and compaction go through FAISS on the
CPU, and the mirror follows (appends are copied in, a compaction rebuilds it). Rows keep the FAISS order,
docnos ascending, so a view's ``bound`` is a prefix of the rows and its ``bitmap`` a row mask.

Results match :class:`FaissIndex.search`: (scores, docnos) of shape ``(queries, k)``, ``-inf``/``-1`` padded,
best first and equal scores by docno (the first added first, as a flat FAISS index keeps them).
Runs on the CPU too (fp32 or bf16), which is how it is tested without a GPU.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

from indexes.storage.kernels.docno_flags import row_flags

DTYPES = ("fp32", "fp16", "bf16")
TIE_PAD = 8  # extra candidates taken so that ties at the k-th score resolve by docno, not by kernel order


def _torch() -> Any:
    import torch

    return torch


def torch_dtype(name: str) -> Any:
    torch = _torch()
    try:
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]
    except KeyError:
        raise ValueError(f"unknown dense flat dtype {name!r}; use one of {', '.join(DTYPES)}") from None


class TorchFlat:
    """The vectors of a flat index on one torch device, appended to in place (capacity doubles as it fills)."""

    def __init__(self, vectors: np.ndarray, docnos: np.ndarray, device: str = "cuda", dtype: str = "fp32") -> None:
        torch = _torch()
        self.device = torch.device(device)
        if self.device.type == "cpu" and dtype == "fp16":
            raise ValueError("fp16 flat search needs a GPU; use fp32 or bf16 on the CPU")
        self.dtype_name = dtype
        self.dtype = torch_dtype(dtype)
        self.dimension = int(vectors.shape[1]) if vectors.ndim == 2 else 0
        self._lock = threading.Lock()  # appends and rebuilds against each other; searches read a consistent prefix
        self._mask: tuple[Any, int, Any] | None = None  # (weakref to the last bitmap, rows, its row mask)
        self._load(vectors, docnos)

    def _load(self, vectors: np.ndarray, docnos: np.ndarray) -> None:
        torch = _torch()
        capacity = max(1024, len(docnos))
        matrix = torch.empty((capacity, self.dimension), dtype=self.dtype, device=self.device)
        if len(docnos):
            rows = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
            matrix[: len(docnos)] = rows.to(self.device, self.dtype)
        self._matrix = matrix
        self._docnos = np.ascontiguousarray(docnos, dtype=np.int64).copy()
        self.size = len(docnos)
        self._mask = None

    @property
    def nbytes(self) -> int:
        return self.size * self.dimension * self._matrix.element_size()

    def append(self, vectors: np.ndarray, docnos: np.ndarray) -> None:
        """Add rows at the end; docnos must be above every docno held (FAISS's own rule for these indexes)."""
        if not len(docnos):
            return
        torch = _torch()
        with self._lock:
            need = self.size + len(docnos)
            if need > self._matrix.shape[0]:
                capacity = max(need, 2 * self._matrix.shape[0])
                grown = torch.empty((capacity, self.dimension), dtype=self.dtype, device=self.device)
                grown[: self.size] = self._matrix[: self.size]
                self._matrix = grown
            rows = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(self.device, self.dtype)
            self._matrix[self.size : need] = rows
            self._docnos = np.concatenate([self._docnos[: self.size], np.asarray(docnos, dtype=np.int64)])
            self.size = need

    def rebuild(self, vectors: np.ndarray, docnos: np.ndarray) -> None:
        """Replace every row (after a compaction removed some)."""
        with self._lock:
            self._load(vectors, docnos)

    def _row_mask(self, bitmap: np.ndarray, rows: int, docnos: np.ndarray) -> Any:
        """Which of the first ``rows`` rows a view's docno bitmap keeps, on the device; the last one is cached,
        since a view's bitmap is built once and searched many times."""
        cached = self._mask
        if cached is not None and cached[0]() is bitmap and cached[1] == rows:
            return cached[2]
        torch = _torch()
        keep = row_flags(docnos, np.unpackbits(bitmap, bitorder="little"))
        mask = torch.from_numpy(keep).to(self.device)
        try:
            self._mask = (weakref.ref(bitmap), rows, mask)
        except TypeError:
            self._mask = None
        return mask

    def search(self, queries: np.ndarray, k: int, bound: int | None = None,
               bitmap: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` (scores, docnos; -1 pads) among docnos below ``bound`` whose ``bitmap`` bit is set."""
        torch = _torch()
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n = len(queries)
        with self._lock:
            matrix, docnos, size = self._matrix, self._docnos, self.size
        rows = size if bound is None else int(np.searchsorted(docnos[:size], bound, side="left"))
        docnos = docnos[:rows]
        out_scores = np.full((n, k), -np.inf, np.float32)
        out_docnos = np.full((n, k), -1, np.int64)
        if rows == 0 or n == 0:
            return out_scores, out_docnos
        with torch.inference_mode():
            q = torch.from_numpy(queries).to(self.device, self.dtype)
            # One query is a matrix-vector product: torch.mv reads the rows in storage order (see the GPU bench).
            scores = torch.mv(matrix[:rows], q[0])[None] if n == 1 else q @ matrix[:rows].T
            if bitmap is not None:
                scores.masked_fill_(~self._row_mask(bitmap, rows, docnos), float("-inf"))
            width = min(k + TIE_PAD, rows)
            top, at = torch.topk(scores, width, dim=1)
            # Scores and rows come back in one copy (each copy to the host waits for the GPU).
            packed = torch.cat([top.float().view(torch.int32), at.to(torch.int32)], dim=1).cpu().numpy()
        top_host = packed[:, :width].view(np.float32)
        found = docnos[packed[:, width:]]
        for i in range(n):
            live = np.isfinite(top_host[i])
            order = np.lexsort((found[i][live], -top_host[i][live]))[:k]
            out_scores[i, : len(order)] = top_host[i][live][order]
            out_docnos[i, : len(order)] = found[i][live][order]
        return out_scores, out_docnos
