"""GPU encoding benchmark for issue 12 (run on the lent H100/H200, never in CI).

    python3 -m eval.bench.gpu_encode --models DIR --corpus corpus.jsonl --queries queries.jsonl \
        --docs 40000 --out $OUT/gpu_encode.json

``DIR`` holds ``dense/`` and ``splade/`` sentence-transformers folders. In one run, on ``--docs``
Cranfield-length documents (the corpus resampled with a fixed seed, title + text), for each model:

- plain: ``SentenceTransformer.encode`` / ``SparseEncoder.encode`` of the fp16 model, batch 1024;
- bare: the bound. Tokenized up front (untimed), length-sorted batches of at most ``--budget`` tokens
  built into pinned memory up front (untimed); timed: copies in, fp16 forward, pooling on the GPU (dense
  masked mean + normalize; SPLADE masked max, log1p(relu), top-256), copies out;
- pipeline: ``gpu.collect``'s pipelines, ``encode`` (fp16 and bf16) and ``encode_stream`` (16,384-document chunks);
- build: the encode stage as ``hybrid index build --device cuda`` runs it: ``DenseEncoder`` /
  ``SpladeEncoder`` on CUDA, ``encode_documents_stream`` over 16,384-document chunks (SPLADE includes
  turning ids into term -> impact maps);
- tokenize: the tokenizer worker pool alone over all documents (what the pipeline can at most reach);
- the fp16 pipeline again without CUDA graphs (``graphs=False``), and with ``tokenizers`` in worker processes instead
  of the compiled WordPiece (``compiled_tokenizer=False``, with that pool alone), for same-run comparisons.

Then equality with the weights in ``DIR`` (dense cosine against the fp32 model; SPLADE impacts against
the fp32 model through ``sparse.quantize``) and batch-1 query latency: eager against CUDA graphs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

CHUNK = 16384
EQUALITY_BUDGET = 16384  # tokens a batch in the equality runs: most of 1,000 documents' batches are full, so replayed
DEVICE = "cuda"  # --device cpu runs a smoke version here (no timings worth reading)


def _sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _empty_cache() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def load_texts(corpus: Path, docs: int, seed: int = 0) -> list[str]:
    texts = []
    for line in corpus.read_text().splitlines():
        doc = json.loads(line)
        title, text = doc.get("title", ""), doc.get("text", "")
        contents = f"{title} {text}".strip() if title else text
        if contents:
            texts.append(contents)
    rng = np.random.default_rng(seed)
    return [texts[i] for i in rng.integers(0, len(texts), size=docs)]


def timed(fn: Any) -> float:
    _sync()
    started = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - started


def bare_loop(model: Any, texts: list[str], sparse: bool, budget: int) -> float:
    """docs/s of the bound: everything but the GPU work done up front."""
    import torch

    from retrieval.encoders.gpu.batching import plan_batches

    net = model[0].auto_model
    tok = model.tokenizer
    enc = tok(texts, truncation=True, max_length=model.max_seq_length, padding=False)["input_ids"]
    lengths = np.array([len(e) for e in enc])
    batches = []
    for index in plan_batches(lengths, budget):
        width = int(lengths[index[0]])
        ids = torch.zeros((len(index), width), dtype=torch.int32, pin_memory=DEVICE == "cuda")
        arr = ids.numpy()
        for r, i in enumerate(index):
            arr[r, : lengths[i]] = enc[i]
        lens = torch.from_numpy(lengths[index].astype(np.int32))
        lens = lens.pin_memory() if DEVICE == "cuda" else lens
        batches.append((ids, lens))
    outs = []

    def run() -> None:
        outs.clear()
        with torch.inference_mode():
            for ids_h, lens_h in batches:
                ids = ids_h.to(DEVICE, non_blocking=True).long()
                lens = lens_h.to(DEVICE, non_blocking=True)
                mask = (torch.arange(ids.shape[1], device=DEVICE)[None, :] < lens[:, None]).long()
                hidden = net(input_ids=ids, attention_mask=mask)[0]
                if sparse:
                    hidden.masked_fill_(mask[:, :, None] == 0, float("-inf"))
                    pooled = torch.log1p(torch.relu(hidden.amax(dim=1)))
                    v, i = torch.topk(pooled, 256, dim=1)
                    res = (v, i)
                else:
                    w = mask.unsqueeze(-1).float()
                    pooled = (hidden.float() * w).sum(1) / w.sum(1)
                    res = (torch.nn.functional.normalize(pooled, dim=1),)
                for t in res:
                    h = torch.empty(t.shape, dtype=t.dtype, pin_memory=DEVICE == "cuda")
                    h.copy_(t, non_blocking=True)
                    outs.append(h)

    run()  # warm-up
    seconds = min(timed(run) for _ in range(2))
    return len(texts) / seconds


def bench_model(kind: str, folder: Path, texts: list[str], budget: int, workers: int | None,
                dtypes: tuple[str, ...] = ("fp16", "bf16")) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer, SparseEncoder

    from retrieval.encoders.dense import DenseEncoder
    from retrieval.encoders.gpu.collect import DensePipeline, SparsePipeline
    from retrieval.encoders.models import ResolvedModel
    from retrieval.encoders.sparse import Quantization, SpladeEncoder

    sparse = kind == "splade"
    out: dict[str, Any] = {"documents": len(texts)}
    model = (SparseEncoder if sparse else SentenceTransformer)(str(folder), device=DEVICE)
    model = model.half() if DEVICE == "cuda" else model
    out["max_seq_length"] = model.max_seq_length
    if sparse:
        plain = lambda: model.encode(texts, batch_size=1024, convert_to_sparse_tensor=True, show_progress_bar=False)  # noqa: E731
    else:
        plain = lambda: model.encode(texts, batch_size=1024, convert_to_numpy=True, show_progress_bar=False)  # noqa: E731
    model.encode(texts[:2048], batch_size=1024, show_progress_bar=False)
    out["plain_fp16_bs1024_docs_per_s"] = len(texts) / timed(plain)
    print(kind, "plain", round(out["plain_fp16_bs1024_docs_per_s"]), flush=True)
    out["bare_loop_docs_per_s"] = bare_loop(model, texts, sparse, budget)
    print(kind, "bare", round(out["bare_loop_docs_per_s"]), flush=True)
    _empty_cache()

    cls = SparsePipeline if sparse else DensePipeline
    for dtype in dtypes:
        pipe = cls.from_model(model, dtype=dtype, token_budget=budget, workers=workers)
        started = time.perf_counter()
        pipe.warmup()
        warm = time.perf_counter() - started
        pipe.encode(texts[:4096])
        seconds = min(timed(lambda: pipe.encode(texts)) for _ in range(2))
        out[f"pipeline_{dtype}_docs_per_s"] = len(texts) / seconds
        if dtype == "fp16":
            out["pipeline_warmup_s"] = warm
            out["pipeline_workers"] = pipe.tokenizers.workers
            chunks = lambda: [texts[i:i + CHUNK] for i in range(0, len(texts), CHUNK)]  # noqa: E731
            seconds = timed(lambda: list(pipe.encode_stream(chunks())))
            out["pipeline_fp16_stream_docs_per_s"] = len(texts) / seconds
            seconds = timed(lambda: [f.result() for f in pipe.tokenizers.submit(texts, pipe.piece)])
            out["tokenize_only_docs_per_s"] = len(texts) / seconds
            out["tokenizer"] = pipe.tokenizers.kind
            pipe.stats.update(dict.fromkeys(pipe.stats, 0.0))
            if pipe.graphs is not None:
                pipe.graphs.replays = 0
            seconds = timed(lambda: pipe.encode(texts))
            out["pipeline_fp16_stage_seconds"] = {"wall_s": seconds, **pipe.stats}
            out["graphs"] = {"captured": len(pipe.graphs.graphs), "rejected": pipe.graphs.rejected,
                             "replayed_batches": pipe.graphs.replays} if pipe.graphs is not None else pipe.graph_error
            if sparse:
                out["sparse_redone_docs"] = pipe.redone
                out["sparse_cap"] = pipe.cap
        print(kind, dtype, round(out[f"pipeline_{dtype}_docs_per_s"]), flush=True)
        pipe.close()
        del pipe
        _empty_cache()
    if "fp16" in dtypes:  # the same pipeline without CUDA graphs, and with ``tokenizers`` in worker processes
        for name, options in (("eager", {"graphs": False}), ("library_tokenizer", {"compiled_tokenizer": False})):
            pipe = cls.from_model(model, dtype="fp16", token_budget=budget, **options)
            pipe.warmup()
            pipe.encode(texts[:4096])
            out[f"pipeline_fp16_{name}_docs_per_s"] = len(texts) / min(timed(lambda: pipe.encode(texts))
                                                                        for _ in range(2))
            if name == "library_tokenizer":
                seconds = timed(lambda: [f.result() for f in pipe.tokenizers.submit(texts, pipe.piece)])
                out["library_tokenize_only_docs_per_s"] = len(texts) / seconds
                out["library_tokenizer"] = f"{pipe.tokenizers.kind} x {pipe.tokenizers.workers}"
            print(kind, f"fp16, {name}", round(out[f"pipeline_fp16_{name}_docs_per_s"]), flush=True)
            pipe.close()
            del pipe
            _empty_cache()

    # the encode stage of a build, as indexes/kinds/{dense,splade}.py run it on CUDA
    resolved = ResolvedModel(kind, folder, "")
    encoder: Any = SpladeEncoder(resolved, device=DEVICE) if sparse else DenseEncoder(resolved, device=DEVICE)
    quant = Quantization(scale=100.0)
    chunks = lambda: (texts[i:i + CHUNK] for i in range(0, len(texts), CHUNK))  # noqa: E731
    stream = (lambda: list(encoder.encode_documents_stream(chunks(), quant))) if sparse else \
        (lambda: list(encoder.encode_documents_stream(chunks())))
    (encoder.encode_documents(texts[:4096], quant) if sparse else encoder.encode_documents(texts[:4096]))
    out["build_encode_stage_docs_per_s"] = len(texts) / timed(stream)
    print(kind, "build stage", round(out["build_encode_stage_docs_per_s"]), flush=True)
    encoder.close()
    out["pipeline_fraction_of_bare"] = out["pipeline_fp16_docs_per_s"] / out["bare_loop_docs_per_s"]
    out["build_fraction_of_bare"] = out["build_encode_stage_docs_per_s"] / out["bare_loop_docs_per_s"]
    out["pipeline_x_plain"] = out["pipeline_fp16_docs_per_s"] / out["plain_fp16_bs1024_docs_per_s"]
    out["build_x_plain"] = out["build_encode_stage_docs_per_s"] / out["plain_fp16_bs1024_docs_per_s"]
    del model, encoder
    _empty_cache()
    return out


def equality(folder_dense: Path, folder_sparse: Path, texts: list[str]) -> dict[str, Any]:
    import torch
    from sentence_transformers import SentenceTransformer, SparseEncoder

    from retrieval.encoders.gpu.collect import DensePipeline, SparsePipeline
    from retrieval.encoders.sparse import Quantization, quantize

    out: dict[str, Any] = {"documents": len(texts)}
    dense = SentenceTransformer(str(folder_dense), device=DEVICE).float()
    reference = dense.encode(texts, batch_size=128, convert_to_numpy=True, normalize_embeddings=True)
    for dtype in ("fp16", "bf16", "fp32"):
        pipe = DensePipeline.from_model(dense, dtype=dtype, workers=4, token_budget=EQUALITY_BUDGET)
        pipe.warmup()
        got = pipe.encode(texts)
        out[f"dense_{dtype}_graph_replays"] = pipe.graphs.replays if pipe.graphs is not None else pipe.graph_error
        cos = (got * reference).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
        out[f"dense_{dtype}_cosine_min"] = float(cos.min())
        out[f"dense_{dtype}_cosine_mean"] = float(cos.mean())
        pipe.close()
    sparse = SparseEncoder(str(folder_sparse), device=DEVICE).float()
    tok = sparse.tokenizer
    vocab = np.array(tok.convert_ids_to_tokens(list(range(len(tok)))), dtype=object)
    tensor = sparse.encode(texts, batch_size=128, convert_to_sparse_tensor=True).coalesce().cpu()
    rows, cols = tensor.indices().numpy()
    weights: list[dict[str, float]] = [{} for _ in texts]
    for r, c, v in zip(rows.tolist(), cols.tolist(), tensor.values().float().numpy().tolist()):
        weights[r][vocab[c]] = v
    for top_k in (None, 64):
        quant = Quantization(scale=100.0, top_k=top_k)
        want = [quantize(w, quant) for w in weights]
        for dtype in ("fp32", "fp16", "bf16"):
            pipe = SparsePipeline.from_model(sparse, dtype=dtype, workers=4, token_budget=EQUALITY_BUDGET)
            pipe.warmup()
            pipe.configure(scale=100.0, top_k=top_k)
            got_rows = pipe.encode(texts)
            got = []
            for ids, impacts in got_rows:
                vec = dict(zip(vocab[ids].tolist(), impacts.tolist()))
                if top_k is not None and len(vec) > top_k:
                    vec = dict(sorted(vec.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k])
                got.append(vec)
            identical = sum(a == b for a, b in zip(got, want))
            diffs = [abs(a.get(t, 0) - b.get(t, 0)) for a, b in zip(got, want) for t in set(a) | set(b)]
            name = f"splade_{dtype}_topk{top_k}"
            out[name] = {"identical_docs": identical, "max_impact_diff": max(diffs) if diffs else 0,
                         "terms_differing": int(sum(d > 0 for d in diffs)), "terms": len(diffs),
                         "terms_off_by_more_than_1": int(sum(d > 1 for d in diffs)), "redone": pipe.redone,
                         "graph_replays": pipe.graphs.replays if pipe.graphs is not None else pipe.graph_error}
            print(name, out[name], flush=True)
            pipe.close()
    del dense, sparse
    _empty_cache()
    return out


def query_latency(folder_dense: Path, folder_sparse: Path, queries: list[str]) -> dict[str, Any]:
    import torch

    from retrieval.encoders.dense import DenseEncoder
    from retrieval.encoders.gpu.query import GraphedQueries
    from retrieval.encoders.models import ResolvedModel
    from retrieval.encoders.sparse import Quantization, SpladeEncoder
    from retrieval.encoders.st_forward import embed_one

    out: dict[str, Any] = {"queries": len(queries)}
    for kind, folder in (("dense", folder_dense), ("splade", folder_sparse)):
        sparse = kind == "splade"
        resolved = ResolvedModel(kind, folder, "")
        encoder: Any = SpladeEncoder(resolved, device=DEVICE) if sparse else DenseEncoder(resolved, device=DEVICE)
        model = encoder.model
        started = time.perf_counter()
        if DEVICE != "cuda":  # smoke run: only the eager parts
            print(kind, "eager", [len(embed_one(model, q)) for q in queries[:2]], encoder.encode_query(queries[0], *(
                [Quantization()] if sparse else [])) is not None)
            continue
        graphs = GraphedQueries(model, sparse=sparse)
        res: dict[str, Any] = {"capture_s": time.perf_counter() - started, "graphs": len(graphs.graphs),
                               "rejected_lengths": graphs.rejected}

        def p50(fn: Any, items: list[Any]) -> float:
            for q in items[:20]:
                fn(q)
            times = []
            for q in items:
                _sync()
                t = time.perf_counter()
                fn(q)
                _sync()
                times.append((time.perf_counter() - t) * 1000)
            return statistics.median(times)

        res["eager_forward_ms_p50"] = p50(lambda q: embed_one(model, q).cpu(), queries)
        ids = [graphs.ids(q) for q in queries]
        fitting = [i for i in ids if len(i) in graphs.graphs]
        res["queries_with_graph"] = len(fitting)
        res["graph_replay_ms_p50"] = p50(lambda i: graphs.graphs[len(i)][0].replay(), fitting)
        res["graph_encode_ms_p50"] = p50(graphs.encode_ids, fitting)
        res["graph_encode_with_tokenize_ms_p50"] = p50(graphs.encode, queries)
        # graph vs eager on every query
        worst = 1.0 if not sparse else 0.0
        for q in queries:
            g = graphs.encode(q)
            if g is None:
                continue
            e = embed_one(model, q).float().cpu()
            if sparse:
                worst = max(worst, float((g - e).abs().max()))
            else:
                e = torch.nn.functional.normalize(e, dim=0)
                worst = min(worst, float(torch.nn.functional.cosine_similarity(g, e, dim=0)))
        res["graph_vs_eager_" + ("max_abs_diff" if sparse else "min_cosine")] = worst
        quant = Quantization(scale=100.0)
        call = (lambda q: encoder.encode_query(q, quant)) if sparse else encoder.encode_query
        encoder.use_query_graphs = False
        res["encoder_encode_query_eager_ms_p50"] = p50(call, queries)
        encoder.use_query_graphs = True
        res["encoder_encode_query_graphs_ms_p50"] = p50(call, queries)
        res["single_queries_per_s"] = 1000 / res["encoder_encode_query_graphs_ms_p50"]
        # what the service's micro-batcher sends when queries arrive together: one encoder call for the list, which
        # goes through the pipeline (made and warmed first, as a service makes it at its first batch)
        batched = (lambda b: encoder.encode_queries(b, quant)) if sparse else encoder.encode_queries
        pipe = encoder.pipeline()
        res["small_graphs"] = len(pipe.small_graphs.graphs) if pipe.small_graphs is not None else pipe.graph_error
        for size in (8, 32):
            groups = [queries[i:i + size] for i in range(0, len(queries) - size + 1, size)]
            res[f"batch{size}_ms_p50"] = p50(batched, groups)
            res[f"batch{size}_queries_per_s"] = size / res[f"batch{size}_ms_p50"] * 1000
        # the batched vectors against each query's own eager forward
        groups = [queries[i:i + 32] for i in range(0, len(queries), 32)]
        got = [v for g in groups for v in batched(g)]
        if sparse:
            eager = [_eager_sparse(encoder, q, quant) for q in queries]
            res["batch32_vectors_identical_to_eager"] = f"{sum(v == e for v, e in zip(got, eager))}/{len(queries)}"
            res["batch32_max_impact_diff_to_eager"] = max(abs(v.get(t, 0) - e.get(t, 0))
                                                          for v, e in zip(got, eager) for t in set(v) | set(e))
        else:
            cosines = [float(torch.nn.functional.cosine_similarity(torch.as_tensor(v), torch.nn.functional.normalize(
                embed_one(model, q).float().cpu(), dim=0), dim=0)) for v, q in zip(got, queries)]
            res["batch32_min_cosine_to_eager"] = min(cosines)
        if sparse:
            same = sum(encoder.encode_query(q, quant) == _eager_sparse(encoder, q, quant) for q in queries)
            res["encoder_query_vectors_identical_to_eager"] = f"{same}/{len(queries)}"
        out[kind] = res
        print(kind, res, flush=True)
    return out


def _eager_sparse(encoder: Any, q: str, quant: Any) -> Any:
    encoder.use_query_graphs = False
    try:
        return encoder.encode_query(q, quant)
    finally:
        encoder.use_query_graphs = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--queries", type=Path, default=None)
    parser.add_argument("--docs", type=int, default=40000)
    parser.add_argument("--budget", type=int, default=131072)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--equality-docs", type=int, default=2000)
    parser.add_argument("--only", default="speed,equality,query")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", default="fp16,bf16")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    import torch

    only = set(args.only.split(","))
    texts = load_texts(args.corpus, args.docs)
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", "cpus": os.cpu_count(),
                              "torch": torch.__version__, "docs": len(texts), "token_budget": args.budget}
    try:
        import sentence_transformers
        import transformers

        report["sentence_transformers"] = sentence_transformers.__version__
        report["transformers"] = transformers.__version__
    except Exception:  # noqa: BLE001
        pass

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str))

    if "speed" in only:
        for kind in ("dense", "splade"):
            report[kind] = bench_model(kind, args.models / kind, texts, args.budget, args.workers,
                                       tuple(args.dtypes.split(",")))
            save()
    if "equality" in only:
        report["equality"] = equality(args.models / "dense", args.models / "splade", texts[: args.equality_docs])
        save()
    if "query" in only and args.queries:
        queries = [json.loads(line)["text"] for line in args.queries.read_text().splitlines() if line.strip()][:200]
        report["query"] = query_latency(args.models / "dense", args.models / "splade", queries)
        save()
    for kind in ("dense", "splade"):
        if kind in report:
            r = report[kind]
            print(f"{kind}: plain {r['plain_fp16_bs1024_docs_per_s']:.0f}  bare {r['bare_loop_docs_per_s']:.0f}  "
                  f"pipeline {r['pipeline_fp16_docs_per_s']:.0f} ({r['pipeline_fraction_of_bare']:.2f} of bare, "
                  f"{r['pipeline_x_plain']:.1f}x plain)  stream {r['pipeline_fp16_stream_docs_per_s']:.0f}  "
                  f"build {r['build_encode_stage_docs_per_s']:.0f}  tokenize {r['tokenize_only_docs_per_s']:.0f}")
    save()


if __name__ == "__main__":
    main()
