"""Single-query encoding, before and after the direct-forward fast path, interleaved.

    python -m eval.bench.query_encode --queries eval/datasets/cranfield/queries.jsonl.gz \\
        --out reports/query_encode_cranfield.json

Both run our whole encoder (vectors out, SPLADE quantized), once through sentence-transformers'
``encode_query`` (the path before the fast path) and once through the direct forward, in one process,
alternating query by query so the machine's speed changes hit both alike; the vectors are checked to be
identical first.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from eval.bench.http_latency import emit, percentiles
from indexes.storage.docstore.corpus import read_jsonl_objects
from retrieval.core.settings import DEFAULT_DENSE_MODEL, DEFAULT_SPARSE_MODEL
from retrieval.encoders.dense import DenseEncoder
from retrieval.encoders.models import resolve_model
from retrieval.encoders.sparse import Quantization, SpladeEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3, help="Passes over the queries.")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    queries = [obj["text"] for _, obj in read_jsonl_objects(args.queries)]
    quant = Quantization()
    splade, dense = SpladeEncoder(resolve_model(DEFAULT_SPARSE_MODEL)), DenseEncoder(resolve_model(DEFAULT_DENSE_MODEL))
    def through(encoder: SpladeEncoder | DenseEncoder, fast: bool, fn):  # type: ignore[no-untyped-def]
        def run(q: str) -> object:
            encoder.single_query_fast_path = fast
            return fn(q)
        return run

    paths = {
        "splade": (through(splade, True, lambda q: splade.encode_queries([q], quant)),
                   through(splade, False, lambda q: splade.encode_queries([q], quant))),
        "dense": (through(dense, True, lambda q: dense.encode_queries([q])),
                  through(dense, False, lambda q: dense.encode_queries([q]))),
    }
    batch = splade.encode_queries(queries, quant)  # the batch path: encode_query
    assert all(splade.encode_queries([q], quant)[0] == v for q, v in zip(queries, batch)), "SPLADE vectors differ"
    np.testing.assert_allclose(np.concatenate([dense.encode_queries([q]) for q in queries]), dense.encode_queries(queries),
                               atol=1e-6)
    report: dict = {"queries": len(queries), "rounds": args.rounds,  # type: ignore[type-arg]
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
    for name, (ours, plain) in paths.items():
        for q in queries[:10]:
            ours(q), plain(q)
        times: dict[str, list[float]] = {"ours": [], "encode_query": []}
        for _ in range(args.rounds):
            for q in queries:
                for label, fn in (("ours", ours), ("encode_query", plain)):
                    started = time.perf_counter()
                    fn(q)
                    times[label].append((time.perf_counter() - started) * 1000.0)
        report[name] = {label: percentiles(v) for label, v in times.items()}
        report[name]["saved_p50_ms"] = report[name]["encode_query"]["p50"] - report[name]["ours"]["p50"]
        print(f"{name}: encode_query p50 {report[name]['encode_query']['p50']:.2f} ms, ours {report[name]['ours']['p50']:.2f} ms",
              flush=True)
    emit(report, args.out)


if __name__ == "__main__":
    main()
