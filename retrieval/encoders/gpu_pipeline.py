"""A streaming encoding pipeline for the GPU (issue 12): documents/s near what the chip allows.

How a stream of text chunks becomes vectors:

1. The caller's thread hands each chunk, cut in pieces, to a pool of tokenizer workers: threads running the compiled
   WordPiece (``wordpiece``) for BERT-style tokenizers, else fast-tokenizer worker processes (``gpu_tokenize``); at
   most ``prefetch`` chunks in flight, so memory stays flat however long the stream.
2. A driver thread takes the chunks in order, sorts each by token count and cuts it into batches that fill
   a token budget (``plan_batches``), writes each batch's padded ids into pinned host memory, copies it to
   the GPU without blocking, and runs the model on its own CUDA stream: a full batch, padded to a multiple of
   32 tokens, is one replay of that width's CUDA graph (``gpu_graphs``), a window's last batch runs eagerly.
   Pooling happens there too:
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
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from retrieval.encoders import gpu_tokenize
from retrieval.encoders.gpu_graphs import (
    SMALL_ROWS,
    BucketGraphs,
    bucket_rows,
    bucket_width,
    document_shapes,
    small_shape,
    small_shapes,
)
from retrieval.encoders.wordpiece import WordPiece

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


class UnsupportedModel(ValueError):
    """The model's module chain is not one the pipeline reproduces; use sentence-transformers' encode."""


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


class _Tokenizers:
    """Tokenization off the caller's thread.

    A BERT-style tokenizer runs compiled (``wordpiece``) in ``workers`` threads of this process, with the GIL released
    while it works, so nothing is pickled and the driver thread is not kept waiting; any other runs ``tokenizers`` in
    worker processes (``workers > 0``) or one thread (``0``).
    """

    def __init__(self, tokenizer: Any, max_length: int, workers: int, wordpiece: WordPiece | None) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise UnsupportedModel("the pipeline needs a fast (Rust) tokenizer")
        self.key = f"{id(self)}"
        self.wordpiece = wordpiece
        self.executor: Executor
        if self.wordpiece is not None:
            self.executor = ThreadPoolExecutor(max(workers, 1), thread_name_prefix="wordpiece")
        elif workers > 0:
            import multiprocessing

            self.executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=gpu_tokenize.init,
                                                initargs=(self.key, backend.to_str(), max_length))
        else:
            gpu_tokenize.init(self.key, backend.to_str(), max_length)
            self.executor = ThreadPoolExecutor(1)
        self.workers = max(workers, 1)
        self.kind = "wordpiece threads" if self.wordpiece is not None else \
            "tokenizers processes" if workers > 0 else "tokenizers thread"

    def _task(self, texts: list[str]) -> Future[tuple[np.ndarray, np.ndarray]]:
        if self.wordpiece is not None:
            return self.executor.submit(self.wordpiece.tokenize, texts)
        return self.executor.submit(gpu_tokenize.tokenize, self.key, texts)

    def submit(self, texts: Sequence[str], piece: int) -> list[Future[tuple[np.ndarray, np.ndarray]]]:
        return [self._task(list(texts[i:i + piece])) for i in range(0, len(texts), piece)]

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """On the caller's thread when compiled (a few texts: no hand-off), else through the workers."""
        if self.wordpiece is not None:
            return self.wordpiece.tokenize(list(texts))
        return self._task(list(texts)).result()

    def warmup(self) -> None:
        list(f.result() for f in [self._task(["warm up"]) for _ in range(self.workers)])

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        gpu_tokenize._tokenizers.pop(self.key, None)


def _default_workers(compiled: bool) -> int:
    """Tokenizer workers on CUDA: compiled WordPiece runs 64-71k Cranfield documents/s a thread on the 2-core machine
    (``python -m eval.bench.wordpiece``) and 48k on an H200 host, so 4 threads are ahead of any GPU here; the
    library's tokenizer needs every core but the two the driver and the caller use (about 1,500 documents/s a process
    on that host)."""
    cores = os.cpu_count() or 2
    if compiled:
        return max(1, min(4, cores - 2))
    return max(1, cores - 2)


@dataclass
class _Chunk:
    texts: Sequence[str]
    futures: list[Future[tuple[np.ndarray, np.ndarray]]]
    batches_total: int = -1
    batches_done: int = 0
    rows: list[Any] = field(default_factory=list)
    tokens: int = 0


class _Pipeline:
    """What dense and sparse share: tokenizers, the driver thread, pinned transfers, ordering."""

    _sparse = False  # how a captured graph is checked against the eager forward (``gpu_graphs``)

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
            workers = _default_workers(wordpiece is not None) if self.cuda else 0
        self.tokenizers = _Tokenizers(st_model.tokenizer, self.max_length, workers, wordpiece)
        self.pad_id = int(getattr(st_model.tokenizer, "pad_token_id", None) or 0)
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        # CUDA graphs of the forward (``gpu_graphs``): per padded width for a stream's full batches, captured when the
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

    def _absorb(self, chunk: _Chunk, index: np.ndarray, host: tuple[np.ndarray, ...]) -> None:
        raise NotImplementedError

    def _finish(self, chunk: _Chunk) -> Any:
        return chunk.rows

    # -- the moving parts ----------------------------------------------------------------------------
    def _batch_inputs(self, ids: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, index: np.ndarray,
                      shape: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ``[B, L]`` int32 ids in (pinned) host memory, and the lengths. ``L`` is the longest length, or its
        bucket's width when a captured graph has exactly this batch's shape; ``shape`` (a small-batch graph's) may
        add padding rows, each one pad token long."""
        lens = lengths[index]
        n = len(index)
        if shape is None:
            width = int(lens.max()) if n else 1
            if self.graphs is not None:
                bucket = bucket_width(width, self.max_length, self.graph_step)
                if self.graphs.fits(n, bucket):
                    width = bucket
            shape = (n, width)
        total = int(lens.sum())
        host = torch.empty(shape, dtype=torch.int32, pin_memory=self.cuda)
        out = host.numpy()
        out.fill(self.pad_id)
        rows = np.repeat(np.arange(n), lens)
        starts = np.repeat(np.cumsum(lens) - lens, lens)
        cols = np.arange(total) - starts
        source = np.repeat(offsets[index], lens) + cols
        out[rows, cols] = ids[source]
        lens_host = torch.ones(shape[0], dtype=torch.int32, pin_memory=self.cuda)
        lens_host.numpy()[:n] = lens
        return host, lens_host

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

    def _drive(self, work: queue.Queue[_Chunk | None], done: queue.Queue[Any]) -> None:
        """Every CUDA call of a stream's batches, on this one thread: batches are launched, and each is handed back
        (as plain numpy arrays) once its event has completed, checked without waiting while at most ``in_flight``
        batches are on the GPU. The caller's thread only scatters rows (and redoes the rare SPLADE document that
        overflows ``cap``, on the default stream): with it waiting on events and freeing pinned buffers,
        the same launches ran 2.6x slower than from one thread alone (16,200 against 42,100 docs/s, MiniLM on an
        H200, pre-tokenized)."""
        flying: deque[tuple[_Chunk, np.ndarray, tuple[torch.Tensor, ...], Any]] = deque()
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
            work: queue.Queue[_Chunk | None] = queue.Queue()
            done: queue.Queue[Any] = queue.Queue()
            driver = threading.Thread(target=self._drive, args=(work, done), daemon=True, name="gpu-pipeline")
            driver.start()
            pending: deque[tuple[int, list[_Chunk]]] = deque()
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
                            chunk = _Chunk(window, self.tokenizers.submit(window, self.piece))
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
        chunk = _Chunk(texts, [])
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


class DensePipeline(_Pipeline):
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

    def _absorb(self, chunk: _Chunk, index: np.ndarray, host: tuple[np.ndarray, ...]) -> None:
        chunk.rows[index] = host[0]

    def _join(self, parts: list[Any], n: int) -> np.ndarray:
        return np.concatenate(parts) if parts else np.empty((0, self.dimension), dtype=np.float32)


class SparsePipeline(_Pipeline):
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

    def _absorb(self, chunk: _Chunk, index: np.ndarray, host: tuple[np.ndarray, ...]) -> None:
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
