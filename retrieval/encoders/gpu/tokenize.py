"""The pipeline's first stage: texts become token ids off the caller's thread, in pieces, as futures.

A BERT-style tokenizer runs compiled (``wordpiece``) in threads of the encoding process; any other runs
``tokenizers`` in spawned worker processes, which import only this module (numpy and ``tokenizers``, no torch),
so starting them is cheap. A piece of texts comes back packed as two int32 arrays (all token ids end to end, and
each text's length), which pickle in one copy each. ``UnsupportedModel`` is here because this is the first
stage that can refuse a model and the one module every other stage imports without torch.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # not at run time: a worker process imports this module alone
    from retrieval.encoders.wordpiece import WordPiece

_tokenizers: dict[str, object] = {}


def init(key: str, tokenizer_json: str, max_length: int) -> None:
    """Load a tokenizer (its JSON form) under ``key``: no padding, truncation at ``max_length``."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    _tokenizers[key] = tokenizer


def tokenize(key: str, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, lengths)``: the token ids of every text (special tokens included) end to end, and their counts.

    Texts are stripped first, as sentence-transformers' own ``tokenize`` does.
    """
    tokenizer = _tokenizers[key]
    # encode_batch_fast (tokenizers >= 0.20) skips offset tracking, which the pipeline never reads
    encode = getattr(tokenizer, "encode_batch_fast", None) or tokenizer.encode_batch  # type: ignore[attr-defined]
    encodings = encode([str(t).strip() for t in texts])
    lists = [e.ids for e in encodings]  # each ``.ids`` read builds a new list: read once
    lengths = np.fromiter(map(len, lists), dtype=np.int32, count=len(lists))
    ids = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int32, count=int(lengths.sum()))
    return ids, lengths


class UnsupportedModel(ValueError):
    """The model's module chain is not one the pipeline reproduces; use sentence-transformers' encode."""


class Tokenizers:
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
                                                initializer=init,
                                                initargs=(self.key, backend.to_str(), max_length))
        else:
            init(self.key, backend.to_str(), max_length)
            self.executor = ThreadPoolExecutor(1)
        self.workers = max(workers, 1)
        self.kind = "wordpiece threads" if self.wordpiece is not None else \
            "tokenizers processes" if workers > 0 else "tokenizers thread"

    def _task(self, texts: list[str]) -> Future[tuple[np.ndarray, np.ndarray]]:
        if self.wordpiece is not None:
            return self.executor.submit(self.wordpiece.tokenize, texts)
        return self.executor.submit(tokenize, self.key, texts)

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
        _tokenizers.pop(self.key, None)


def default_workers(compiled: bool) -> int:
    """Tokenizer workers on CUDA: compiled WordPiece runs 64-71k Cranfield documents/s a thread on the 2-core machine
    (``python -m eval.bench.wordpiece``) and 48k on an H200 host, so 4 threads are ahead of any GPU here; the
    library's tokenizer needs every core but the two the driver and the caller use (about 1,500 documents/s a process
    on that host)."""
    cores = os.cpu_count() or 2
    if compiled:
        return max(1, min(4, cores - 2))
    return max(1, cores - 2)
