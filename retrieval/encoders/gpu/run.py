"""A streaming encoding pipeline for the GPU (issue 12): documents/s near what the chip allows.

This module is its core (``Pipeline``: the driver thread, ordering, graph capture); the stages it runs are in
``tokenize``, ``batching`` and ``collect`` (the dense and sparse kinds).

How a stream of text chunks becomes vectors:

1. The caller's thread hands each chunk, cut in pieces, to a pool of tokenizer workers: threads running the compiled
   WordPiece (``wordpiece``) for BERT-style tokenizers, else fast-tokenizer worker processes (``tokenize``); at
   most ``prefetch`` chunks in flight, so memory stays flat however long the stream.
2. A driver thread takes the chunks in order, sorts each by token count and cuts it into batches that fill
   a token budget (``batching.plan_batches``), writes each batch's padded ids into pinned host memory, copies it to
   the GPU without blocking, and runs the model on its own CUDA stream: a full batch, padded to a multiple of
   32 tokens, is one replay of that width's CUDA graph (``graphs``), a window's last batch runs eagerly.
   Pooling happens there too (``collect``):
   dense: masked mean + L2 normalization; SPLADE: max-pool of the logits, ``log1p(relu)``, integer
   quantization and a top-k, so that only ``(term ids, impacts)`` come back. Results are copied back
   into pinned memory without blocking and an event is recorded; at most ``in_flight`` batches are queued,
   and the driver hands each back as numpy arrays once its event has completed. Every CUDA call of the
   batches is on this thread.
3. The caller's thread scatters each batch's rows into its chunk's result and yields the chunk once all
   its batches are in, in input order.

A call with a few short texts (``encode`` of up to 32 texts of up to 64 ids: the service's micro-batched queries)
skips all that: it is tokenized and replayed as one small-batch graph on the caller's thread.

The same code runs on the CPU (no pinned memory, streams or events), which is how the tests check that
it gives the existing encoders' vectors.
"""

from __future__ import annotations

import copy
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch

from retrieval.encoders.gpu.batching import Chunk, batch_inputs, plan_batches
from retrieval.encoders.gpu.graphs import SMALL_ROWS, BucketGraphs, document_shapes, small_shape, small_shapes
from retrieval.encoders.gpu.tokenize import Tokenizers, UnsupportedModel, default_workers
from retrieval.encoders.wordpiece import WordPiece

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

SWITCH_INTERVAL = 0.001  # seconds: Python's thread switch interval while a CUDA pipeline streams (default 0.005)
_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved = 0.0


@contextmanager
def _short_switch_interval() -> Iterator[None]:
    """The GIL handed between threads every :data:`SWITCH_INTERVAL` while a pipeline streams, not every 5 ms.

    The driver thread's launches need the GIL, and the threads that take the tokenizer processes' results off their
    pipes hold it for whole unpickles: at the default 5 ms the launch step took 30 ms a batch, against 6 ms alone.
    ``python -m eval.bench.gpu_pipeline_probe gil`` on an H200 (MiniLM, 40,000 documents, 14 tokenizer processes):
    14,352 docs/s at 5 ms, 16,441 at 1 ms, 17,114 at 0.2 ms (``reports/gpu/gpu_pipeline_gil_h200.json``). The
    setting is the interpreter's, so pipelines running at once share one change, undone when the last one ends.
    """
    global _switch_users, _switch_saved
    with _switch_lock:
        if _switch_users == 0:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_saved, SWITCH_INTERVAL))
        _switch_users += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


class Pipeline:
    """What dense and sparse share: tokenizers, the driver thread, pinned transfers, ordering."""

    _sparse = False  # how a captured graph is checked against the eager forward (``graphs``)

    def __init__(self, st_model: Any, *, device: str | torch.device | None = None, dtype: str = "fp16",
                 token_budget: int = 131072, max_batch: int = 4096, workers: int | None = None,
                 chunk_size: int = 4096, piece: int = 512, prefetch: int = 8, in_flight: int = 6,
                 max_length: int | None = None, compiled_tokenizer: bool = True, graphs: bool = True,
                 graph_step: int = 32) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
        modules = list(st_model)
        first = modules[0]
        if not hasattr(first, "auto_model"):
            raise UnsupportedModel("the first module has no transformers model")
        if any((getattr(st_model, "prompts", None) or {}).values()):
            raise UnsupportedModel("models with prompts go through sentence-transformers' encode")
        self.device = torch.device(device) if device is not None else next(first.auto_model.parameters()).device
        self.cuda = self.device.type == "cuda"
        self.dtype = DTYPES[dtype] if self.cuda or dtype == "fp32" else torch.float32
        net = first.auto_model
        if next(net.parameters()).dtype != self.dtype or next(net.parameters()).device != self.device:
            net = copy.deepcopy(net).to(device=self.device, dtype=self.dtype)
        self.net = net.eval()
        self.max_length = int(max_length or getattr(st_model, "max_seq_length", None) or 512)
        self.token_budget, self.max_batch = token_budget, max_batch
        self.chunk_size, self.piece, self.prefetch, self.in_flight = chunk_size, piece, prefetch, in_flight
        # BERT-style tokenizers run compiled (``compiled_tokenizer=False``: the library's, in processes on CUDA)
        wordpiece = WordPiece.from_tokenizer(st_model.tokenizer, self.max_length) if compiled_tokenizer else None
        if workers is None:
            workers = default_workers(wordpiece is not None) if self.cuda else 0
        self.tokenizers = Tokenizers(st_model.tokenizer, self.max_length, workers, wordpiece)
        self.pad_id = int(getattr(st_model.tokenizer, "pad_token_id", None) or 0)
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        # CUDA graphs of the forward (``graphs``): per padded width for a stream's full batches, captured when the
        # first stream starts; small shapes for a few short texts, captured at ``warmup``; eager until then
        self.use_graphs, self.graph_step = graphs and self.cuda, graph_step
        self.graphs: BucketGraphs | None = None  # full batches of the stream
        self.small_graphs: BucketGraphs | None = None  # a few short texts in one call (``encode``)
        self.graph_error: str | None = None
        self._lock = threading.Lock()  # one stream at a time: the model and stream are not shared
        # seconds per stage, summed over calls: the driver waiting for tokens, building padded batches on the host,
        # launching GPU work, waiting for the GPU (``in_flight`` batches queued); the caller waiting for results and
        # turning them into rows; and the number of batches launched
        self.stats = dict.fromkeys(("tokenize_wait_s", "host_batches_s", "launch_s", "result_wait_s", "caller_wait_s",
                                    "absorb_s", "batches"), 0.0)

    def _net(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The transformer's first output, with the padding mask given as a ready 4D additive mask.

        Given a 2D mask, Hugging Face's mask helpers ask the GPU whether it has any padding
        (``padding_mask.all()``): a host sync per batch, which stops the host from queueing the next
        batch while this one runs. A 4D mask is used as it is.
        """
        dtype = next(self.net.parameters()).dtype
        additive = (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
        return self.net(input_ids=ids, attention_mask=additive)[0]

    # -- to be provided by the kinds -------------------------------------------------------------
    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The part a CUDA graph captures: fixed shapes, nothing that depends on settings changed per call."""
        raise NotImplementedError

    def _post(self, outputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """What runs eagerly after the forward (or its replay), on the same stream."""
        return outputs

    def _compute(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self._post(self._forward(ids, mask))

    def _new_result(self, n: int) -> Any:
        raise NotImplementedError

    def _absorb(self, chunk: Chunk, index: np.ndarray, host: tuple[np.ndarray, ...]) -> None:
        raise NotImplementedError

    def _finish(self, chunk: Chunk) -> Any:
        return chunk.rows

    # -- the moving parts ----------------------------------------------------------------------------
    def _batch_inputs(self, ids: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, index: np.ndarray,
                      shape: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch's padded ids and lengths (``batching.batch_inputs``) at this pipeline's pad id, graphs and
        widths."""
        return batch_inputs(ids, offsets, lengths, index, pad_id=self.pad_id, pin=self.cuda, graphs=self.graphs,
                            max_length=self.max_length, step=self.graph_step, shape=shape)

    def _run_batch(self, host_ids: torch.Tensor, host_lens: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], Any]:
        """Copy in, compute, copy out; returns host tensors and an event (None on the CPU)."""
        if not self.cuda:
            ids = host_ids.long()
            mask = torch.arange(ids.shape[1])[None, :] < host_lens[:, None].long()
            with torch.inference_mode():
                return tuple(t.numpy() for t in self._compute(ids, mask.long())), None
        assert self.stream is not None
        with torch.cuda.stream(self.stream), torch.inference_mode():
            if self.graphs is not None and self.graphs.fits(*host_ids.shape):
                outputs = self._post(self.graphs.run(host_ids, host_lens))
            else:
                ids = host_ids.to(self.device, non_blocking=True).long()
                lens = host_lens.to(self.device, non_blocking=True)
                mask = (torch.arange(ids.shape[1], device=self.device)[None, :] < lens[:, None]).long()
                outputs = self._compute(ids, mask)
            hosts = []
            for t in outputs:
                h = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                h.copy_(t, non_blocking=True)
                hosts.append(h)
            event = torch.cuda.Event()
            event.record(self.stream)
        return tuple(hosts), event

    def _drive(self, work: queue.Queue[Chunk | None], done: queue.Queue[Any]) -> None:
        """Every CUDA call of a stream's batches, on this one thread: batches are launched, and each is handed back
        (as plain numpy arrays) once its event has completed, checked without waiting while at most ``in_flight``
        batches are on the GPU. The caller's thread only scatters rows (and redoes the rare SPLADE document that
        overflows ``cap``, on the default stream): with it waiting on events and freeing pinned buffers,
        the same launches ran 2.6x slower than from one thread alone (16,200 against 42,100 docs/s, MiniLM on an
        H200, pre-tokenized)."""
        flying: deque[tuple[Chunk, np.ndarray, tuple[torch.Tensor, ...], Any]] = deque()
        stats = self.stats

        def hand(wait: bool) -> None:
            """Hand back the finished batches at the head of the line (all of them, with ``wait``)."""
            while flying and (wait or flying[0][3] is None or flying[0][3].query()):
                chunk, index, hosts, event = flying.popleft()
                if event is not None:
                    started = time.perf_counter()
                    event.synchronize()
                    stats["result_wait_s"] += time.perf_counter() - started
                done.put((chunk, index, tuple(np.array(h.numpy()) if self.cuda else h for h in hosts)))

        try:
            while True:
                try:
                    chunk = work.get_nowait()
                except queue.Empty:
                    hand(wait=True)  # nothing else to launch: let the caller have every batch before blocking
                    chunk = work.get()
                if chunk is None:
                    break
                if not all(f.done() for f in chunk.futures):
                    hand(wait=True)  # this chunk's tokens are not in yet: the caller gets the last one's batches first
                started = time.perf_counter()
                parts = [f.result() for f in chunk.futures]
                stats["tokenize_wait_s"] += time.perf_counter() - started
                ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int32)
                lengths = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int32)
                offsets = np.cumsum(lengths, dtype=np.int64) - lengths
                chunk.tokens = int(lengths.sum())
                step = self.graph_step if self.graphs is not None else 1
                batches = plan_batches(lengths, self.token_budget, self.max_batch, step, self.max_length)
                chunk.batches_total = len(batches)
                if not batches:
                    done.put((chunk, None, None))
                for index in batches:
                    started = time.perf_counter()
                    host_ids, host_lens = self._batch_inputs(ids, offsets, lengths, index)
                    launched = time.perf_counter()
                    hosts, event = self._run_batch(host_ids, host_lens)
                    stats["host_batches_s"] += launched - started
                    stats["launch_s"] += time.perf_counter() - launched
                    stats["batches"] += 1
                    flying.append((chunk, index, hosts, event))
                    if len(flying) > self.in_flight:  # enough queued on the GPU: wait for the oldest batch
                        head = flying[0][3]
                        if head is not None:
                            started = time.perf_counter()
                            head.synchronize()
                            stats["result_wait_s"] += time.perf_counter() - started
                    hand(wait=False)
            hand(wait=True)
        except BaseException as exc:  # handed to the caller's thread, which re-raises it
            done.put(exc)

    def encode_stream(self, chunks: Iterable[Sequence[str]]) -> Iterator[Any]:
        """One result per chunk of texts, in order; tokenizing, the GPU and the caller overlap.

        Chunks are cut into windows of at most ``chunk_size`` texts, each sorted and batched on its own;
        at most ``prefetch`` windows are in flight, so memory stays flat however long the stream is.
        """
        with self._lock, (_short_switch_interval() if self.cuda else nullcontext()):
            if self.graphs is None:
                self.graphs = self._capture(document_shapes(self.max_length, self.token_budget, self.max_batch,
                                                            self.graph_step))
            work: queue.Queue[Chunk | None] = queue.Queue()
            done: queue.Queue[Any] = queue.Queue()
            driver = threading.Thread(target=self._drive, args=(work, done), daemon=True, name="gpu-pipeline")
            driver.start()
            pending: deque[tuple[int, list[Chunk]]] = deque()
            in_flight = 0
            source = iter(chunks)
            exhausted = False
            try:
                while True:
                    while not exhausted and in_flight < self.prefetch:
                        try:
                            texts = next(source)
                        except StopIteration:
                            exhausted = True
                            break
                        group = []
                        for start in range(0, max(len(texts), 1), self.chunk_size):
                            window = texts[start:start + self.chunk_size]
                            chunk = Chunk(window, self.tokenizers.submit(window, self.piece))
                            chunk.rows = self._new_result(len(window))
                            group.append(chunk)
                            work.put(chunk)
                        pending.append((len(texts), group))
                        in_flight += len(group)
                    if not pending:
                        break
                    size, group = pending.popleft()
                    for head in group:
                        while head.batches_total < 0 or head.batches_done < head.batches_total:
                            started = time.perf_counter()
                            item = done.get()
                            if isinstance(item, BaseException):
                                raise item
                            chunk, index, hosts = item
                            if index is not None:
                                got = time.perf_counter()
                                self._absorb(chunk, index, hosts)
                                chunk.batches_done += 1
                                self.stats["absorb_s"] += time.perf_counter() - got
                                self.stats["caller_wait_s"] += got - started
                    in_flight -= len(group)
                    yield self._join([self._finish(c) for c in group], size)
            finally:
                work.put(None)
                driver.join()

    def encode(self, texts: Sequence[str]) -> Any:
        """All of ``texts`` at once (streamed through the pipeline in windows of ``chunk_size``; a few short texts
        are one graph replay on the caller's thread instead)."""
        if self.small_graphs is not None and 0 < len(texts) <= SMALL_ROWS[-1]:
            small = self._encode_small(texts)
            if small is not None:
                return small
        return next(iter(self.encode_stream([texts])))

    def _encode_small(self, texts: Sequence[str]) -> Any:
        """A few short texts as one replay of a small-shape graph, without the driver thread; None when they do not
        fit one (too many, or too long)."""
        assert self.small_graphs is not None and self.stream is not None
        ids, lengths = self.tokenizers.tokenize(texts)
        shape = small_shape(len(texts), int(lengths.max()))
        if shape is None or not self.small_graphs.fits(*shape):
            return None
        offsets = np.cumsum(lengths, dtype=np.int64) - lengths
        host, host_lens = self._batch_inputs(ids, offsets, lengths, np.arange(len(texts)), shape)
        with self._lock, torch.cuda.stream(self.stream), torch.inference_mode():
            outputs = self._post(tuple(t[:len(texts)] for t in self.small_graphs.run(host, host_lens)))
            hosts = tuple(t.cpu().numpy() for t in outputs)  # waits for this stream's work
        chunk = Chunk(texts, [])
        chunk.rows = self._new_result(len(texts))
        self._absorb(chunk, np.arange(len(texts)), hosts)
        return self._join([self._finish(chunk)], len(texts))

    def _join(self, parts: list[Any], n: int) -> Any:
        raise NotImplementedError

    def _capture(self, shapes: list[tuple[int, int]]) -> BucketGraphs | None:
        """Graphs of the forward at ``shapes`` (the caller holds ``_lock``), or None: on the CPU, with graphs off, or
        after any capture failed (the eager forward is always right; the reason is kept in ``graph_error``)."""
        if not self.use_graphs or self.graph_error is not None:
            return None
        assert self.stream is not None
        graphs = BucketGraphs(self._forward, shapes, device=self.device, stream=self.stream, pad_id=self.pad_id,
                              vocab=int(getattr(self.net.config, "vocab_size", 1000)), sparse=self._sparse)
        try:
            graphs.capture()
        except Exception as exc:
            self.graph_error = f"{type(exc).__name__}: {exc}"
            torch.cuda.synchronize(self.device)
            return None
        return graphs

    def warmup(self) -> None:
        """Start the tokenizer workers, capture the small-batch graphs and run the model once (kernels, allocator).

        The full-batch graphs are captured when the first stream starts (``encode_stream``): a server that only
        micro-batches queries never holds their memory pool (for SPLADE, the logits of a whole token budget)."""
        self.tokenizers.warmup()
        if self.small_graphs is None:
            with self._lock:
                self.small_graphs = self._capture(small_shapes(self.max_length))
        widths = (8,) if self.small_graphs is not None else (8, 64, min(self.max_length, 256))
        for width in widths:
            text = " ".join(["warm"] * width)
            self.encode([text] * 8)

    def close(self) -> None:
        self.tokenizers.close()

