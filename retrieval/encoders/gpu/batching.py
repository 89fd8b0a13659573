"""The pipeline's second stage: token ids become padded batches, longest first, each filling a token budget.

Pure host work (numpy, and torch only for the pinned buffers the GPU copies from): which texts go together
(``plan_batches``) and the padded ``[B, L]`` ids of one batch (``batch_inputs``), at the widths the CUDA graphs
(``graphs``) were captured at.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from retrieval.encoders.gpu.graphs import BucketGraphs, bucket_rows, bucket_width


def plan_batches(lengths: np.ndarray, token_budget: int, max_batch: int = 4096, step: int = 1,
                 max_width: int = 1 << 30) -> list[np.ndarray]:
    """Indices of ``lengths`` grouped into batches, longest first, each padded size within ``token_budget``.

    A batch is padded to its first (longest) member rounded up to a multiple of ``step`` (at most ``max_width``),
    so ``len(batch) * width <= token_budget`` (a single text longer than the budget gets a batch of its own). With
    ``step > 1`` every full batch of one width has the same shape, which is what a CUDA graph replays.
    """
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start, n = 0, len(order)
    while start < n:
        width = bucket_width(int(lengths[order[start]]), max_width, step)
        size = min(bucket_rows(width, token_budget, max_batch), n - start)  # a full batch: the rows a graph holds
        batches.append(order[start:start + size])
        start += size
    return batches


def batch_inputs(ids: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, index: np.ndarray, *, pad_id: int,
                 pin: bool, graphs: BucketGraphs | None, max_length: int, step: int,
                 shape: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded ``[B, L]`` int32 ids in (pinned) host memory, and the lengths. ``L`` is the longest length, or its
    bucket's width when a captured graph has exactly this batch's shape; ``shape`` (a small-batch graph's) may
    add padding rows, each one pad token long. Host memory is pinned with ``pin`` (CUDA)."""
    lens = lengths[index]
    n = len(index)
    if shape is None:
        width = int(lens.max()) if n else 1
        if graphs is not None:
            bucket = bucket_width(width, max_length, step)
            if graphs.fits(n, bucket):
                width = bucket
        shape = (n, width)
    total = int(lens.sum())
    host = torch.empty(shape, dtype=torch.int32, pin_memory=pin)
    out = host.numpy()
    out.fill(pad_id)
    rows = np.repeat(np.arange(n), lens)
    starts = np.repeat(np.cumsum(lens) - lens, lens)
    cols = np.arange(total) - starts
    source = np.repeat(offsets[index], lens) + cols
    out[rows, cols] = ids[source]
    lens_host = torch.ones(shape[0], dtype=torch.int32, pin_memory=pin)
    lens_host.numpy()[:n] = lens
    return host, lens_host


@dataclass
class Chunk:
    """A window of texts on its way: its tokenizer futures, and its result rows as batches come back."""

    texts: Sequence[str]
    futures: list[Future[tuple[np.ndarray, np.ndarray]]]
    batches_total: int = -1
    batches_done: int = 0
    rows: list[Any] = field(default_factory=list)
    tokens: int = 0
