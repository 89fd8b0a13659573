"""GPU benchmarks (run on the lent H100/H200, never in CI): encoders and FAISS flat/IVF search.

    python -m eval.bench.gpu faiss    --out $OUT/gpu_faiss.json     # needs faiss-gpu (../shared/gpu kit)
    python -m eval.bench.gpu encoders --models DIR --corpus FILE --out $OUT/gpu_encoders.json

faiss: measures the GPU's own copy bandwidth and fp16 matrix rate first (same run), then flat inner
product over 1M and 5M 384-d vectors at batch 1, 32 and 1024 with fp32 and fp16 storage, as FAISS
(GpuIndexFlatIP) and as a plain torch matmul + top-k, each as queries/s and as a fraction of its
bound: batch 1 against bytes-of-the-index / bandwidth, large batches against 2*N*d*B / matrix rate.
With --real FILE (float32 .npy of real embeddings) it also reports IVF recall@10 against flat.

encoders: documents/s of our fp16, length-sorted, large-batch encoders against a plain
``SentenceTransformer.encode`` / ``SparseEncoder.encode`` call (fp32, batch 32) on the same texts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def _sync() -> None:
    import torch

    torch.cuda.synchronize()


def _timeit(fn: Any, repeat: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    _sync()
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    _sync()
    return (time.perf_counter() - started) / repeat


def machine_bounds() -> dict[str, float]:
    import torch

    src = torch.empty(2 * 1024**3 // 2, dtype=torch.float16, device="cuda")
    dst = torch.empty_like(src)
    seconds = _timeit(lambda: dst.copy_(src), repeat=20)
    read_bw = 2 * src.numel() * 2 / seconds  # bytes moved per second, reads plus writes: what a pure read can reach
    a = torch.randn(8192, 8192, dtype=torch.float16, device="cuda")
    b = torch.randn(8192, 8192, dtype=torch.float16, device="cuda")
    seconds = _timeit(lambda: a @ b, repeat=20)
    del src, dst
    return {"read_bandwidth_gbs": read_bw / 1e9, "fp16_matmul_tflops": 2 * 8192**3 / seconds / 1e12,
            "gpu": torch.cuda.get_device_name()}


def bench_faiss(sizes: list[int], batches: list[int], dim: int = 384, k: int = 10) -> dict[str, Any]:
    import faiss
    import faiss.contrib.torch_utils  # noqa: F401  (lets FAISS take torch GPU tensors)
    import torch

    bounds = machine_bounds()
    res = faiss.StandardGpuResources()
    rows = []
    gen = torch.Generator(device="cuda").manual_seed(0)
    for n in sizes:
        base = torch.nn.functional.normalize(torch.randn(n, dim, device="cuda", generator=gen), dim=1)
        queries = torch.nn.functional.normalize(torch.randn(max(batches), dim, device="cuda", generator=gen), dim=1)
        for storage in ("fp32", "fp16"):
            cfg = faiss.GpuIndexFlatConfig()
            cfg.useFloat16 = storage == "fp16"
            index = faiss.GpuIndexFlatIP(res, dim, cfg)
            index.add(base)
            matrix = base.half() if storage == "fp16" else base
            elt = 2 if storage == "fp16" else 4
            for batch in batches:
                q = queries[:batch].contiguous()
                qm = q.half() if storage == "fp16" else q
                repeat = 50 if batch < 1024 else 10
                t_faiss = _timeit(lambda: index.search(q, k), repeat)
                t_torch = _timeit(lambda: torch.topk(qm @ matrix.T, k, dim=1), repeat)
                bytes_bound = n * dim * elt / (bounds["read_bandwidth_gbs"] * 1e9)
                flops_bound = 2 * n * dim * batch / (bounds["fp16_matmul_tflops"] * 1e12)
                for engine, t in (("faiss", t_faiss), ("torch", t_torch)):
                    rows.append({"n": n, "storage": storage, "batch": batch, "engine": engine, "ms": t * 1000,
                                 "qps": batch / t, "bandwidth_fraction": bytes_bound / t,
                                 "matmul_fraction": flops_bound / t})
            del index, matrix
            torch.cuda.empty_cache()
        del base
        torch.cuda.empty_cache()
    return {"bounds": bounds, "flat": rows}


def ivf_recall(vectors: np.ndarray, nlists: list[int], nprobes: list[int], k: int = 10, queries: int = 1000
               ) -> list[dict[str, Any]]:
    import faiss

    res = faiss.StandardGpuResources()
    rng = np.random.default_rng(0)
    qidx = rng.choice(len(vectors), size=queries, replace=False)
    q = vectors[qidx]
    flat = faiss.GpuIndexFlatIP(res, vectors.shape[1])
    flat.add(vectors)
    _, truth = flat.search(q, k + 1)
    out = []
    for nlist in nlists:
        cpu = faiss.index_factory(vectors.shape[1], f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        index = faiss.index_cpu_to_gpu(res, 0, cpu)
        started = time.perf_counter()
        index.train(vectors)
        index.add(vectors)
        build = time.perf_counter() - started
        for nprobe in nprobes:
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", nprobe)
            started = time.perf_counter()
            _, found = index.search(q, k + 1)
            seconds = time.perf_counter() - started
            recall = np.mean([len(set(found[i][:k]) & set(truth[i][:k])) / k for i in range(queries)])
            out.append({"nlist": nlist, "nprobe": nprobe, "recall@10_vs_flat": float(recall),
                        "qps_batch1000": queries / seconds, "build_s": build, "n": len(vectors)})
    return out


def bench_encoders(models: Path, corpus: Path, repeat_corpus: int, max_docs: int) -> dict[str, Any]:
    import torch
    from sentence_transformers import SentenceTransformer, SparseEncoder

    from retrieval.encoders.dense import DenseEncoder
    from retrieval.encoders.models import ResolvedModel
    from retrieval.encoders.sparse import Quantization, SpladeEncoder

    texts = []
    for line in corpus.read_text().splitlines():
        doc = json.loads(line)
        text = f"{doc.get('title', '')} {doc.get('text', '')}".strip()
        if text:
            texts.append(text)
    texts = (texts * repeat_corpus)[:max_docs]
    out: dict[str, Any] = {"documents": len(texts), "gpu": torch.cuda.get_device_name()}
    for kind, folder in (("dense", models / "dense"), ("splade", models / "splade")):
        model = ResolvedModel(kind, folder, "")
        if kind == "dense":
            plain = SentenceTransformer(str(folder), device="cuda")
            plain_fn = lambda: plain.encode(texts, batch_size=32, convert_to_numpy=True)  # noqa: E731
            ours = DenseEncoder(model, device="cuda")
            ours_fn = lambda bs: ours.encode_documents(texts, batch_size=bs)  # noqa: E731
        else:
            plain = SparseEncoder(str(folder), device="cuda")
            plain_fn = lambda: plain.encode(texts, batch_size=32, convert_to_sparse_tensor=True)  # noqa: E731
            ours_s = SpladeEncoder(model, device="cuda")
            ours_fn = lambda bs: ours_s.encode_documents(texts, Quantization(), batch_size=bs)  # noqa: E731
        plain_fn()  # warm-up
        _sync()
        started = time.perf_counter()
        plain_fn()
        _sync()
        plain_rate = len(texts) / (time.perf_counter() - started)
        rows = []
        for bs in (128, 256, 512):
            ours_fn(bs)
            _sync()
            started = time.perf_counter()
            ours_fn(bs)
            _sync()
            rate = len(texts) / (time.perf_counter() - started)
            rows.append({"batch_size": bs, "docs_per_s": rate, "ratio_to_plain": rate / plain_rate})
        out[kind] = {"plain_fp32_bs32_docs_per_s": plain_rate, "ours_fp16": rows}
        del plain
        torch.cuda.empty_cache()
    return out


def real_embeddings(models: Path, corpus: Path, sizes: tuple[int, ...] = (8, 16), limit: int = 400_000) -> np.ndarray:
    """About a million real MiniLM embeddings: every word window of the given sizes over the corpus."""
    from retrieval.encoders.dense import DenseEncoder
    from retrieval.encoders.models import ResolvedModel

    texts = []
    for line in corpus.read_text().splitlines():
        words = json.loads(line).get("text", "").split()
        for size in sizes:
            texts += [" ".join(words[i : i + size]) for i in range(0, max(0, len(words) - size + 1))]
    texts = texts[:limit]
    encoder = DenseEncoder(ResolvedModel("dense", models / "dense", ""), device="cuda")
    started = time.perf_counter()
    vectors = encoder.encode_documents(texts, batch_size=1024)
    print(f"encoded {len(texts)} windows in {time.perf_counter() - started:.1f} s", flush=True)
    return vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["faiss", "encoders", "ivf", "real"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", default="1000000,5000000")
    parser.add_argument("--batches", default="1,32,1024")
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--repeat-corpus", type=int, default=40)
    parser.add_argument("--max-docs", type=int, default=50_000)
    parser.add_argument("--real", type=Path, default=None, help="float32 .npy of real embeddings (ivf)")
    args = parser.parse_args()
    if args.what == "faiss":
        report = bench_faiss([int(s) for s in args.sizes.split(",")], [int(b) for b in args.batches.split(",")])
    elif args.what == "ivf":
        vectors = np.load(args.real).astype(np.float32)
        report = {"ivf": ivf_recall(vectors, [1024, 4096], [8, 32, 128])}
    elif args.what == "real":
        assert args.models and args.corpus
        report = bench_encoders(args.models, args.corpus, args.repeat_corpus, args.max_docs)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))  # kept even if the IVF part runs out of time
        print(json.dumps(report), flush=True)
        vectors = real_embeddings(args.models, args.corpus)
        report["ivf"] = ivf_recall(vectors, [1024, 4096], [8, 32, 128])
    else:
        assert args.models and args.corpus
        report = bench_encoders(args.models, args.corpus, args.repeat_corpus, args.max_docs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
