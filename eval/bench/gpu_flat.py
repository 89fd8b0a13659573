"""Dense search on a GPU (issue 12, item 5): torch flat search against the bandwidth bound and FAISS; IVF recall.

    # speed: N random unit vectors, the dense backend's torch flat search (fp32/fp16/bf16) and FAISS's GpuIndexFlatIP
    python3 -m eval.bench.gpu_flat speed --docs 1000000 --out $OUT/gpu_flat.json
    # IVF recall@10 against exact search, on real MiniLM embeddings of Cranfield-resampled text
    python3 -m eval.bench.gpu_flat ivf --corpus data/corpus.jsonl --queries data/queries.jsonl \\
        --model models/dense --docs 1000000 --out $OUT/gpu_ivf.json

*speed*: a batch-1 flat search reads every stored vector once, so its bound is ``N * d * bytes`` over the
memory bandwidth, measured here by a device-to-device copy of 4 GiB (read + write). Timed, per query, end to
end as the dense retriever calls it: ``TorchFlat.search`` (query copied in, matmul, top-k, results copied back
and ordered), p50 over ``--repeats`` queries after a warm-up; beside it the bare matmul + top-k timed by CUDA
events (no host round trip) and FAISS's ``GpuIndexFlatIP`` (fp32, and fp16 storage), when a FAISS with GPUs
imports (the kit in ``../shared/gpu``).

*ivf*: ``--docs`` documents resampled from the corpus by :func:`eval.bench.scale.resample_text` (sentences
of one document, each kept with probability 0.8, plus one of another: real text, no exact duplicates, but
about ``docs / corpus size`` near-copies of each source document, which makes the true top 10 near-ties),
encoded by the real model (fp16, the GPU pipeline), queries by the same model. The truth is the exact top 10
(torch fp32). FAISS IVF indexes are trained on the GPU on all the vectors, searched at several ``nprobe``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from indexes.storage.docstore.corpus import read_jsonl_objects
from indexes.storage.faiss.torch_flat import TorchFlat

DEVICE = "cuda"  # --device cpu runs a smoke version anywhere (no bandwidth, no bare timing, no FAISS GPU)


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    vectors = rng.standard_normal((n, d), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def _gpu_faiss(out: dict[str, Any]) -> tuple[Any, Any]:
    """FAISS with GPU resources, its version noted in ``out``; (None, None) where there is none."""
    faiss = _faiss()
    if faiss is None:
        out["faiss"] = "no FAISS with GPUs importable"
        return None, None
    out["faiss"] = faiss.__version__
    return faiss, faiss.StandardGpuResources()


def _faiss() -> Any:
    if DEVICE != "cuda":
        return None
    try:
        import faiss
    except ImportError:
        return None
    return faiss if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0 else None


def copy_bandwidth(gib: float = 4.0) -> float:
    """Bytes per second a device-to-device copy moves (each byte read once and written once)."""
    import torch

    n = int(gib * 2**30)
    src = torch.empty(n, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(10):
        start.record()
        dst.copy_(src)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1000)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * n / min(times)


def _p50_ms(fn: Any, queries: np.ndarray, repeats: int) -> float:
    for i in range(min(20, repeats)):
        fn(queries[i % len(queries)][None])
    times = []
    for i in range(repeats):
        q = queries[i % len(queries)][None]
        started = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def _batch_qps(fn: Any, queries: np.ndarray, batch: int, rounds: int = 5) -> float:
    fn(queries[:batch])
    started = time.perf_counter()
    for r in range(rounds):
        fn(queries[(r * batch) % max(1, len(queries) - batch):][:batch])
    return rounds * batch / (time.perf_counter() - started)


def _bare_ms(matrix: Any, queries: np.ndarray, k: int, repeats: int) -> float:
    """matmul + top-k alone, timed on the GPU by events (the query already on the device)."""
    import torch

    q = torch.from_numpy(queries[:1]).to("cuda", matrix.dtype)
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = {}
    steps = {"matmul": lambda: torch.topk(q @ matrix.T, k), "mv": lambda: torch.topk(torch.mv(matrix, q[0]), k),
             "mv_only": lambda: torch.mv(matrix, q[0])}
    for name, step in steps.items():
        for _ in range(20):
            step()
        times = []
        for _ in range(repeats):
            start.record()
            step()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        best[name] = statistics.median(times)
    print("   bare ms:", {n: round(t, 4) for n, t in best.items()}, flush=True)
    return best["mv"]


def speed(docs: int, dim: int, k: int, repeats: int, dtypes: list[str], batch: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    vectors = _unit(rng, docs, dim)
    queries = _unit(rng, max(repeats, batch * 6), dim)
    bandwidth = copy_bandwidth() if DEVICE == "cuda" else float("nan")
    out: dict[str, Any] = {"docs": docs, "dim": dim, "k": k, "repeats": repeats, "batch": batch,
                           "copy_bandwidth_gb_s": bandwidth / 1e9, "rows": []}
    print(f"copy bandwidth {bandwidth / 1e9:.0f} GB/s", flush=True)

    def row(engine: str, dtype: str, nbytes: int, p50: float, qps: float, bare: float | None = None) -> None:
        bound = nbytes / bandwidth * 1000  # nan on the CPU smoke run
        entry = {"engine": engine, "dtype": dtype, "bytes": nbytes, "bound_ms": bound, "p50_ms": p50,
                 "fraction_of_bound": bound / p50, f"batch{batch}_qps": qps}
        if bare is not None:
            entry.update(bare_ms=bare, bare_fraction_of_bound=bound / bare)
        out["rows"].append(entry)
        print(f"{engine:>16} {dtype:>5}: p50 {p50:.3f} ms (bound {bound:.3f} ms, {bound / p50:.2f} of it)"
              + (f", bare {bare:.3f} ms ({bound / bare:.2f})" if bare is not None else "")
              + f", batch {batch}: {qps:,.0f} q/s", flush=True)

    def ours(dtype: str) -> np.ndarray:
        mirror = TorchFlat(vectors, np.arange(docs), device=DEVICE, dtype=dtype)
        p50 = _p50_ms(lambda q: mirror.search(q, k), queries, repeats)
        bare = _bare_ms(mirror._matrix[:docs], queries, k, repeats) if DEVICE == "cuda" else None
        row("torch (ours)", dtype, mirror.nbytes, p50, _batch_qps(lambda q: mirror.search(q, k), queries, batch), bare)
        return mirror.search(queries[:200], k)[1]

    def theirs(dtype: str) -> np.ndarray:
        config = faiss.GpuIndexFlatConfig()
        config.useFloat16 = dtype == "fp16"
        index = faiss.GpuIndexFlatIP(res, dim, config)
        index.add(vectors)
        p50 = _p50_ms(lambda q: index.search(q, k), queries, repeats)
        qps = _batch_qps(lambda q: index.search(q, k), queries, batch)
        row("FAISS GpuIndexFlatIP", dtype, docs * dim * (2 if dtype == "fp16" else 4), p50, qps)
        return index.search(queries[:200], k)[1]

    truth = None
    for dtype in dtypes:
        found = ours(dtype)
        truth = found if truth is None else truth
        out["rows"][-1]["recall_at_k_vs_first"] = _recall(found, truth, k)
        _empty_cache()
    faiss, res = _gpu_faiss(out)
    for dtype in ("fp32", "fp16") if faiss is not None else ():
        out["rows"][-1]["recall_at_k_vs_first"] = _recall(theirs(dtype), truth, k)
    return out


def resampled_texts(corpus: Path, docs: int, seed: int) -> list[str]:
    from eval.bench.scale import resample_text, split_sentences

    source = [obj for _, obj in read_jsonl_objects(corpus)]
    titles = [d.get("title", "") for d in source]
    sentences = [split_sentences(d.get("title", ""), d.get("text", "")) for d in source]
    rng = np.random.default_rng(seed)
    templates, donors = rng.integers(0, len(source), docs), rng.integers(0, len(source), docs)
    return [f"{titles[t]} {resample_text(sentences[t], sentences[d], rng)}".strip()
            for t, d in zip(templates.tolist(), donors.tolist())]


def ivf(corpus: Path, queries_file: Path, model: Path, docs: int, k: int, lists: list[int], nprobes: list[int],
        factories: list[str], seed: int) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    from retrieval.encoders.gpu.collect import DensePipeline

    started = time.perf_counter()
    texts = resampled_texts(corpus, docs, seed)
    out: dict[str, Any] = {"docs": docs, "k": k, "seed": seed, "text_seconds": time.perf_counter() - started}
    st = SentenceTransformer(str(model), device=DEVICE)
    st = st.half() if DEVICE == "cuda" else st
    pipe = DensePipeline.from_model(st, dtype="fp16" if DEVICE == "cuda" else "fp32")
    pipe.warmup()
    started = time.perf_counter()
    vectors = np.ascontiguousarray(pipe.encode(texts), dtype=np.float32)
    out["encode_docs_per_s"] = docs / (time.perf_counter() - started)
    queries = [obj["text"] for _, obj in read_jsonl_objects(queries_file)]
    q = np.ascontiguousarray(pipe.encode(queries), dtype=np.float32)
    pipe.close()
    del st
    _empty_cache()
    out["queries"] = len(q)
    print(f"encoded {docs} docs at {out['encode_docs_per_s']:,.0f}/s, {len(q)} queries", flush=True)
    exact = TorchFlat(vectors, np.arange(docs), device=DEVICE, dtype="fp32")
    truth = exact.search(q, k)[1]
    del exact
    half_dtype = "fp16" if DEVICE == "cuda" else "bf16"
    half = TorchFlat(vectors, np.arange(docs), device=DEVICE, dtype=half_dtype)
    out[f"torch_{half_dtype}_recall"] = _recall(half.search(q, k)[1], truth, k)
    del half
    _empty_cache()
    faiss, res = _gpu_faiss(out)
    if faiss is None:
        return out
    out["rows"] = []
    for n_lists in lists:
        for pattern in factories:
            factory = pattern.format(lists=n_lists)
            cpu = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
            index = faiss.index_cpu_to_gpu(res, 0, cpu)
            started = time.perf_counter()
            index.train(vectors)
            index.add(vectors)
            build = time.perf_counter() - started
            out["rows"] += _ivf_rows(faiss, index, factory, build, q, truth, k, [n for n in nprobes if n <= n_lists])
            del index
    return out


def _ivf_rows(faiss: Any, index: Any, factory: str, build: float, q: np.ndarray, truth: np.ndarray, k: int,
              nprobes: list[int]) -> list[dict[str, Any]]:
    rows = []
    space = faiss.GpuParameterSpace()
    for nprobe in nprobes:
        space.set_index_parameter(index, "nprobe", nprobe)
        recall = _recall(index.search(q, k)[1], truth, k)
        p50 = _p50_ms(lambda x: index.search(x, k), q, min(200, len(q)))
        rows.append({"factory": factory, "nprobe": nprobe, "build_s": build, "recall_at_k": recall, "p50_ms": p50})
        print(f"{factory:>18} nprobe {nprobe:>4}: recall@{k} {recall:.4f}, p50 {p50:.3f} ms (built in {build:.1f} s)",
              flush=True)
    return rows


def _empty_cache() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def _recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(a[:k].tolist()) & set(b[:k].tolist())) / k for a, b in zip(found, truth)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--docs", type=int, default=1_000_000)
    s.add_argument("--dim", type=int, default=384)
    s.add_argument("--repeats", type=int, default=500)
    s.add_argument("--batch", type=int, default=256)
    s.add_argument("--dtypes", default="fp32,fp16,bf16")
    i = sub.add_parser("ivf")
    i.add_argument("--corpus", type=Path, required=True)
    i.add_argument("--queries", type=Path, required=True)
    i.add_argument("--model", type=Path, required=True)
    i.add_argument("--docs", type=int, default=1_000_000)
    i.add_argument("--lists", default="1024,4096")
    i.add_argument("--nprobe", default="1,8,32,64,128")
    i.add_argument("--factories", default="IVF{lists},Flat;IVF{lists},PQ32")
    i.add_argument("--seed", type=int, default=13)
    for p in (s, i):
        p.add_argument("--k", type=int, default=10)
        p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
        p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    import torch

    report: dict[str, Any] = {"command": "python3 -m eval.bench.gpu_flat " + " ".join(sys.argv[1:]),
                              "gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
                              "torch": torch.__version__, "cpus": os.cpu_count()}
    if args.part == "speed":
        report["speed"] = speed(args.docs, args.dim, args.k, args.repeats, args.dtypes.split(","), args.batch)
    else:
        report["ivf"] = ivf(args.corpus, args.queries, args.model, args.docs, args.k,
                            [int(x) for x in args.lists.split(",")], [int(x) for x in args.nprobe.split(",")],
                            args.factories.split(";"), args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
