"""Where the GPU encoding pipeline's time goes (issue 12): its parts run alone and together, on a lent GPU.

    python3 -m eval.bench.gpu_pipeline_probe split --config DENSE_CONFIG_DIR --out $OUT/probe_split.json
    python3 -m eval.bench.gpu_pipeline_probe workers --config DENSE_CONFIG_DIR --out $OUT/probe_workers.json
    python3 -m eval.bench.gpu_pipeline_probe wordpiece --config DENSE_CONFIG_DIR --out $OUT/probe_wordpiece.json

``DENSE_CONFIG_DIR`` is a sentence-transformers MiniLM folder without its weights: the model is built there with
random weights (speed does not depend on them). 40,000 documents resampled from Cranfield, as
:mod:`eval.bench.gpu_encode` does. Never runs in CI (needs CUDA).

* ``split``: the bare loop (the bound); the pipeline's own batch building and launch step called in a loop from
  one thread over pre-tokenized windows (``driver_only``), also with a 2D padding mask and on the default
  stream; the forward alone over batches already on the GPU; then the whole pipeline and its tokenizers alone.
* ``workers``: the whole pipeline with 14, 11 and 8 tokenizer processes (``tokenizers``) (best of two passes each), the tokenizers
  alone at each count, and the pipeline fed pre-tokenized windows (no tokenizer work beside it).
* ``wordpiece``: the whole pipeline and its tokenizers alone with the compiled WordPiece in 1, 2, 4 and 8 threads,
  and with ``tokenizers`` in 14 processes (what the pipeline used before it), in one run.
* ``gil``: the whole pipeline (14 and 11 tokenizer processes) under Python's default thread switch interval (5 ms)
  and shorter ones (the pipeline's own ``SWITCH_INTERVAL`` set to each): whether the driver thread's launches wait
  on the GIL held by the threads that receive the tokenizers' results. The report in ``reports/gpu`` was made before
  the pipeline set an interval of its own.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np


def _timed(fn: Any) -> float:
    import torch

    torch.cuda.synchronize()
    started = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - started


def _setup(config: Path, corpus_gz: Path, docs: int) -> tuple[Any, list[str]]:
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel

    from eval.bench import gpu_encode

    gpu_encode.DEVICE = "cuda"
    corpus = Path("/tmp/probe_corpus.jsonl")
    corpus.write_text(gzip.open(corpus_gz, "rt").read())
    texts = gpu_encode.load_texts(corpus, docs)
    folder = Path("/tmp/probe_dense")
    shutil.copytree(config, folder, dirs_exist_ok=True)
    BertModel(BertConfig.from_pretrained(folder)).half().save_pretrained(folder)
    return SentenceTransformer(str(folder), device="cuda").half(), texts


def _windows(pipe: Any, texts: list[str]) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    return {start: [f.result() for f in pipe.tokenizers.submit(texts[start:start + pipe.chunk_size], pipe.piece)]
            for start in range(0, len(texts), pipe.chunk_size)}


def _pretokenized(pipe: Any, windows: dict[int, list[tuple[np.ndarray, np.ndarray]]]) -> Any:
    """A stand-in for the tokenizer pool's ``submit`` that answers each window from ``windows``, in order."""
    order = iter(sorted(windows))

    def submit(window: Any, piece: int) -> list[Future[Any]]:
        futures = []
        for result in windows[next(order)]:
            future: Future[Any] = Future()
            future.set_result(result)
            futures.append(future)
        return futures

    return submit


def split(model: Any, texts: list[str]) -> dict[str, Any]:
    import torch

    from eval.bench import gpu_encode
    from retrieval.encoders.gpu.batching import plan_batches
    from retrieval.encoders.gpu.collect import DensePipeline

    report: dict[str, Any] = {"bare": gpu_encode.bare_loop(model, texts, False, 131072)}
    pipe = DensePipeline.from_model(model, dtype="fp16", workers=14)
    pipe.warmup()
    pipe.encode(texts[:4096])
    windows = []
    for parts in _windows(pipe, texts).values():
        ids, lengths = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        windows.append((ids, lengths, np.cumsum(lengths, dtype=np.int64) - lengths))

    def driver_only() -> None:
        kept = []
        for ids, lengths, offsets in windows:
            for index in plan_batches(lengths, pipe.token_budget, pipe.max_batch):
                kept.append(pipe._run_batch(*pipe._batch_inputs(ids, offsets, lengths, index)))
        for _, event in kept:
            event.synchronize()

    driver_only()
    report["driver_only"] = len(texts) / _timed(driver_only)
    real_net = pipe._net
    pipe._net = lambda ids, mask: pipe.net(input_ids=ids, attention_mask=mask)[0]
    driver_only()
    report["driver_only_2d_mask"] = len(texts) / _timed(driver_only)
    pipe._net = real_net
    side, pipe.stream = pipe.stream, torch.cuda.current_stream()
    driver_only()
    report["driver_only_default_stream"] = len(texts) / _timed(driver_only)
    pipe.stream = side
    on_gpu = [(h.cuda(), lens.cuda()) for ids, lengths, offsets in windows
              for h, lens in (pipe._batch_inputs(ids, offsets, lengths, index)
                              for index in plan_batches(lengths, pipe.token_budget, pipe.max_batch))]
    report["batches"] = len(on_gpu)

    def forward_only() -> None:
        with torch.inference_mode():
            for h, lens in on_gpu:
                ids = h.long()
                pipe._compute(ids, (torch.arange(ids.shape[1], device="cuda")[None, :] < lens[:, None]).long())

    forward_only()
    report["forward_only_4d"] = len(texts) / _timed(forward_only)
    pipe.stats.update(dict.fromkeys(pipe.stats, 0.0))
    seconds = _timed(lambda: pipe.encode(texts))
    report["pipeline_w14"] = {"docs_s": len(texts) / seconds, **{k: round(v, 3) for k, v in pipe.stats.items()}}
    report["tokenize_w14"] = len(texts) / _timed(lambda: [f.result() for f in pipe.tokenizers.submit(texts, pipe.piece)])
    pipe.close()
    return report


def _warm_pipeline(model: Any, texts: list[str], workers: int, compiled: bool = True) -> Any:
    from retrieval.encoders.gpu.collect import DensePipeline

    pipe = DensePipeline.from_model(model, dtype="fp16", workers=workers, compiled_tokenizer=compiled)
    pipe.warmup()
    pipe.encode(texts[:4096])
    return pipe


def _best_of_two(pipe: Any, texts: list[str]) -> dict[str, float]:
    """docs/s of the faster of two passes over ``texts``, with that pass's stage seconds."""
    best: tuple[float, dict[str, float]] | None = None
    for _ in range(2):
        pipe.stats.update(dict.fromkeys(pipe.stats, 0.0))
        seconds = _timed(lambda: pipe.encode(texts))
        if best is None or seconds < best[0]:
            best = (seconds, dict(pipe.stats))
    assert best is not None
    return {"docs_s": len(texts) / best[0], **{k: round(v, 3) for k, v in best[1].items()}}


def workers(model: Any, texts: list[str], counts: tuple[int, ...] = (14, 11, 8)) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for count in counts:
        pipe = _warm_pipeline(model, texts, count, compiled=False)
        report[f"w{count}"] = _best_of_two(pipe, texts)
        report[f"w{count}_tokenize"] = len(texts) / _timed(
            lambda: [f.result() for f in pipe.tokenizers.submit(texts, pipe.piece)])
        if count == counts[0]:
            real = pipe.tokenizers.submit
            pipe.tokenizers.submit = _pretokenized(pipe, _windows(pipe, texts))
            pipe.stats.update(dict.fromkeys(pipe.stats, 0.0))
            seconds = _timed(lambda: pipe.encode(texts))
            report["pretokenized"] = {"docs_s": len(texts) / seconds, **{k: round(v, 3) for k, v in pipe.stats.items()}}
            pipe.tokenizers.submit = real
        pipe.close()
    return report


def gil(model: Any, texts: list[str], counts: tuple[int, ...] = (14, 11),
        intervals: tuple[float, ...] = (0.005, 0.001, 0.0002)) -> dict[str, Any]:
    import sys

    from retrieval.encoders.gpu import run as gpu_run

    report: dict[str, Any] = {}
    default, own = sys.getswitchinterval(), gpu_run.SWITCH_INTERVAL
    try:
        for count in counts:
            pipe = _warm_pipeline(model, texts, count, compiled=False)
            for interval in intervals:
                # the pipeline streams at min(the interpreter's interval, its own): both set to the one measured
                sys.setswitchinterval(interval)
                gpu_run.SWITCH_INTERVAL = interval
                report[f"w{count}_switch_{interval * 1000:g}ms"] = _best_of_two(pipe, texts)
            pipe.close()
    finally:
        sys.setswitchinterval(default)
        gpu_run.SWITCH_INTERVAL = own
    return report


def wordpiece(model: Any, texts: list[str], counts: tuple[int, ...] = (1, 2, 4, 8)) -> dict[str, Any]:
    """The compiled WordPiece in 1, 2, 4 and 8 threads against ``tokenizers`` in 14 processes, in the same run: the
    whole pipeline (best of two passes) and the tokenizers alone."""
    report: dict[str, Any] = {}
    for label, count, compiled in [*((f"threads{c}", c, True) for c in counts), ("processes14", 14, False)]:
        pipe = _warm_pipeline(model, texts, count, compiled=compiled)
        report[label] = _best_of_two(pipe, texts)
        report[f"{label}_tokenize"] = len(texts) / min(_timed(
            lambda: [f.result() for f in pipe.tokenizers.submit(texts, pipe.piece)]) for _ in range(2))
        print(label, round(report[label]["docs_s"]), round(report[f"{label}_tokenize"]), flush=True)
        pipe.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("split", "workers", "gil", "wordpiece"))
    parser.add_argument("--config", type=Path, required=True, help="a MiniLM folder without weights")
    parser.add_argument("--corpus", type=Path, default=Path("eval/datasets/cranfield/corpus.jsonl.gz"))
    parser.add_argument("--docs", type=int, default=40000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import os

    model, texts = _setup(args.config, args.corpus, args.docs)
    report = {"cpus": os.cpu_count(), "docs": len(texts),
              **{"split": split, "workers": workers, "gil": gil, "wordpiece": wordpiece}[args.mode](model, texts)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report))


if __name__ == "__main__":  # the tokenizer workers are spawned: they must not run this
    main()
