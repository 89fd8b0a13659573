"""CUDA graphs of the document forward, one per padded width (issue 12): a batch is one replay, not ~150 launches.

Why: with tokenizing out of the way (``wordpiece``), the GPU pipeline's driver thread spent 1.6 of 1.8 seconds for
40,000 MiniLM documents inside the launch step (``launch_s``), about 25 ms a batch against 6 ms for the same eager forward
on an idle process: Python's module calls and kernel launches, slowed further by every other thread wanting the GIL. A
replay is one call whatever the model, so the host side stops setting the pace.

How: widths are rounded up to a multiple of ``step`` (32 tokens; the last bucket is ``max_length``). Each width ``w``
gets one graph with ``rows[w] = min(max_batch, token_budget // w)`` rows, the shape the batch planner fills, with
static inputs (int32 ids and lengths: the mask is built inside the graph) and static outputs. All graphs share one
memory pool: they run one at a time on the pipeline's stream, and each replay's outputs are copied or reduced on that
stream before the next replay, so no graph reads memory another may have reused. A batch with fewer rows than its
bucket (a window's last) runs eagerly rather than spend GPU time on padding rows. With graphs the pipeline reached 0.91
(MiniLM) and 0.83 (SPLADE-tiny) of a bare loop on an H200, against 0.34-0.54 and 0.50-0.67 eager in the same runs.

A few short texts at once (the service's micro-batched queries) get graphs of their own (``small_shapes``: up to 32
rows of up to 64 ids), padded up to the next shape and replayed on the caller's thread: the streaming pipeline took
74 ms for 8 queries on an H200, where one replay takes 0.8 ms.

Each graph is checked against the eager forward on random ids with padding when captured (cosine >= 0.9999 dense,
max abs difference <= 1e-2 sparse, as the query graphs are); a shape whose graph does not reproduce it stays eager.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Forward = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]


def bucket_widths(max_length: int, step: int) -> list[int]:
    """Padded widths: multiples of ``step`` below ``max_length``, and ``max_length`` itself."""
    widths = list(range(step, max_length, step))
    return widths + [max_length]


def bucket_width(longest: int, max_length: int, step: int) -> int:
    """The width a batch whose longest text has ``longest`` ids is padded to."""
    return min(max_length, -(-max(longest, 1) // step) * step)


def bucket_rows(width: int, token_budget: int, max_batch: int) -> int:
    return max(1, min(max_batch, token_budget // width))


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    ids: torch.Tensor  # int32 [rows, width], on the device
    lengths: torch.Tensor  # int32 [rows]
    outputs: tuple[torch.Tensor, ...]


def document_shapes(max_length: int, token_budget: int, max_batch: int, step: int) -> list[tuple[int, int]]:
    """``(rows, width)`` of a full batch at every padded width: what the batch planner fills."""
    return [(bucket_rows(w, token_budget, max_batch), w) for w in bucket_widths(max_length, step)]


SMALL_ROWS = (1, 2, 4, 8, 16, 32)
SMALL_WIDTHS = (16, 32, 64)


def small_shapes(max_length: int) -> list[tuple[int, int]]:
    """Shapes for a few short texts at once (the service's micro-batched queries, a small upsert): rows and width
    rounded up to the next of ``SMALL_ROWS`` and ``SMALL_WIDTHS``."""
    return [(r, w) for r in SMALL_ROWS for w in SMALL_WIDTHS if w <= max_length]


def small_shape(rows: int, longest: int) -> tuple[int, int] | None:
    """The smallest small shape holding ``rows`` texts of at most ``longest`` ids, or None."""
    r = next((r for r in SMALL_ROWS if r >= rows), None)
    w = next((w for w in SMALL_WIDTHS if w >= longest), None)
    return (r, w) if r is not None and w is not None else None


class BucketGraphs:
    """One captured forward per shape; :meth:`run` replays the one matching a batch's shape."""

    def __init__(self, forward: Forward, shapes: list[tuple[int, int]], *, device: torch.device,
                 stream: torch.cuda.Stream, pad_id: int = 0, vocab: int = 1000, sparse: bool = False) -> None:
        self.forward, self.shapes, self.device, self.stream = forward, shapes, device, stream
        self.pad_id, self.vocab, self.sparse = pad_id, vocab, sparse
        self.graphs: dict[tuple[int, int], _Graph] = {}
        self.rejected: list[tuple[int, int]] = []
        self.replays = 0

    def _inputs(self, rows: int, width: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random ids with a spread of lengths (some rows one token long), padded as the pipeline pads."""
        lengths = torch.randint(1, width + 1, (rows,), generator=generator, dtype=torch.int32)
        lengths[0] = width
        ids = torch.randint(1000, max(self.vocab, 1001), (rows, width), generator=generator, dtype=torch.int32)
        ids[torch.arange(width)[None, :] >= lengths[:, None]] = self.pad_id
        return ids.to(self.device), lengths.to(self.device)

    def _masked_forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mask = (torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]).long()
        return self.forward(ids.long(), mask)

    def _close(self, got: torch.Tensor, want: torch.Tensor) -> bool:
        if self.sparse:
            return bool((got.float() - want.float()).abs().max().item() <= 1e-2)
        cosine = torch.nn.functional.cosine_similarity(got.float(), want.float(), dim=1)
        return bool(cosine.min().item() >= 0.9999)

    def capture(self) -> None:
        """Capture every shape's graph, largest first, and check each against the eager forward."""
        pool = torch.cuda.graph_pool_handle()
        generator = torch.Generator(device="cpu").manual_seed(0)
        with torch.inference_mode():
            for rows, width in sorted(self.shapes, key=lambda s: (-s[0] * s[1], -s[1])):
                ids, lengths = self._inputs(rows, width, generator)
                self.stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(self.stream):
                    for _ in range(2):  # cuBLAS workspaces and autotuning happen outside the capture
                        self._masked_forward(ids, lengths)
                self.stream.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool, stream=self.stream, capture_error_mode="thread_local"):
                    outputs = self._masked_forward(ids, lengths)
                probe_ids, probe_lengths = self._inputs(rows, width, generator)
                with torch.cuda.stream(self.stream):
                    ids.copy_(probe_ids)
                    lengths.copy_(probe_lengths)
                    graph.replay()
                    want = self._masked_forward(probe_ids, probe_lengths)
                    same = all(self._close(g, w) for g, w in zip(outputs, want))
                if same:
                    self.graphs[rows, width] = _Graph(graph, ids, lengths, outputs)
                else:
                    self.rejected.append((rows, width))
                del want
        torch.cuda.synchronize(self.device)

    def fits(self, rows: int, width: int) -> bool:
        return (rows, width) in self.graphs

    def run(self, host_ids: torch.Tensor, host_lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Copy a full batch (pinned int32 ``[rows, width]`` and ``[rows]``) in and replay its graph, on the current
        stream (the pipeline's); the outputs are the graph's static tensors, valid until the next replay."""
        entry = self.graphs[tuple(host_ids.shape)]  # type: ignore[index]
        entry.ids.copy_(host_ids, non_blocking=True)
        entry.lengths.copy_(host_lengths, non_blocking=True)
        entry.graph.replay()
        self.replays += 1
        return entry.outputs
