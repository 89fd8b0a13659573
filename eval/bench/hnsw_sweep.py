"""HNSW recall@10 against exact search as efSearch grows, on a built index's dense retriever.

    python -m eval.bench.hnsw_sweep INDEX_FOLDER --queries eval/datasets/cranfield/queries.jsonl.gz \\
        --ef 128,256,512,1024 --out reports/scale-lean/hnsw_sweep.json

The exact answer comes from the index's own stored vectors (inner product over all of them), so nothing
is re-encoded; queries are encoded by the index's dense model. One query at a time on one thread.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from eval.bench.http_latency import emit, percentiles
from indexes.storage.docstore.corpus import read_jsonl_objects


def main() -> None:
    import faiss

    from indexes.storage.faiss.backend import FILE
    from retrieval.search.pipeline import Searcher

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--ef", default="128,256,512,1024")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    texts = [obj["text"] for _, obj in read_jsonl_objects(args.queries)][: args.limit]
    searcher = Searcher.open(args.index, verify="off", retrievers=["dense"])
    try:
        queries = searcher.searchers["dense"].encode_queries(texts)  # type: ignore[attr-defined]
    finally:
        searcher.close()
    wrapped = faiss.read_index(str(args.index / "dense" / FILE))
    hnsw = faiss.downcast_index(faiss.downcast_index(wrapped).index)
    vectors = hnsw.reconstruct_n(0, hnsw.ntotal)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    faiss.omp_set_num_threads(1)
    report: dict = {"index": str(args.index), "documents": int(hnsw.ntotal), "queries": len(texts), "ef": {}}  # type: ignore[type-arg]
    for ef in [int(e) for e in args.ef.split(",")]:
        hnsw.hnsw.efSearch = ef
        times, recalls = [], []
        for q, want in zip(queries, truth):
            started = time.perf_counter()
            _, got = hnsw.search(q[None, :], 10)
            times.append((time.perf_counter() - started) * 1000.0)
            recalls.append(len(set(got[0].tolist()) & set(want.tolist())) / 10)
        report["ef"][str(ef)] = {"recall_at_10_vs_exact": float(np.mean(recalls)), "latency_ms": percentiles(times)}
        print(f"efSearch {ef}: recall@10 {np.mean(recalls):.4f}, p50 {percentiles(times)['p50']:.3f} ms", flush=True)
    emit(report, args.out)


if __name__ == "__main__":
    main()
