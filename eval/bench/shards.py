"""What sharding costs in one process: build time and search latency with S = 1, 2, 4 shards, same documents.

    python -m eval.bench.shards --source ../shared/data/cranfield --index data/indexes/beir-cranfield \\
        --docs 10000 --shards 1,2,4 --work data/shards --out reports/bench/shards [--queries 200]

The corpus and its vectors come from :mod:`eval.bench.scale` (seeded, resampled from the source index);
each shard count is built from those vectors (``build_index(..., vectors=...)``: encoding is the same
for every S and is left out). Per S, single queries in the library (k 10, depth 100): p50/p99 of each
retriever's search time and of the RRF hybrid, encoding excluded (it runs once per query whatever S is).
The rankings are checked against S = 1 (top-10 ids of exact searches equal for every query and retriever:
approximate searches are tuned per shard, so theirs may differ with S). Writes
``shards.json`` and ``shards.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from eval.bench.http_latency import percentiles
from eval.bench.scale import generate
from indexes.indexing.builder import build_index
from indexes.storage.docstore.corpus import read_jsonl_objects
from indexes.storage.docstore.layout import IndexRoot
from retrieval.core.options import BuildOptions, OpenOptions
from retrieval.search.pipeline import Searcher

METHODS: dict[str, list[str] | None] = {"bm25": ["bm25"], "splade": ["splade"], "dense": ["dense"], "hybrid": None}


def measure(searcher: Searcher, queries: list[str]) -> tuple[dict[str, Any], dict[str, list[list[str]]]]:
    report: dict[str, Any] = {}
    tops: dict[str, list[list[str]]] = {}
    for method, retrievers in METHODS.items():
        for q in queries[:5]:
            searcher.search(q, k=10, retrievers=retrievers)
        search_ms, total_ms, top = [], [], []
        for q in queries:
            result = searcher.search(q, k=10, retrievers=retrievers)
            search_ms.append(sum(v for k, v in result.timings_ms.items() if k.endswith(("_search", "fuse"))))
            total_ms.append(result.took_ms)
            # Compared exactly: each shard's approximate search (SPLADE clusters, an ANN index) is tuned on its own
            # shard, so approximate rankings may differ with S by design (issue 37); exact ones may not.
            top.append([h.id for h in searcher.search(q, k=10, retrievers=retrievers, exact=True).hits])
        report[method] = {"search_ms": percentiles(search_ms), "total_ms": percentiles(total_ms)}
        tops[method] = top
        print(f"  {method:>7}: search p50 {np.median(search_ms):6.2f} ms, p99 {np.percentile(search_ms, 99):6.2f} ms",
              flush=True)
    return report, tops


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Command: `{report['command']}`", "",
             f"# Shards in one process: {report['docs']:,} documents, FAISS {report['faiss']}, {report['queries']} "
             f"queries, 2 cores ({report['machine']['platform']})", "",
             "Search time per query, encoding excluded (ms, p50 / p99), build from vectors, and top-10 equality with "
             "S = 1:", "",
             "| shards | build s | bm25 | splade | dense | hybrid (RRF, fusion included) | top-10 equal to S=1 |",
             "|---|---|---|---|---|---|---|"]
    for shards, row in report["results"].items():
        cells = [f"{row['latency'][m]['search_ms']['p50']:.2f} / {row['latency'][m]['search_ms']['p99']:.2f}"
                 for m in METHODS]
        lines.append(f"| {shards} | {row['build_s']} | " + " | ".join(cells) + f" | {row['equal_to_one']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True, help="An index of --source with splade and dense.")
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--shards", default="1,2,4")
    parser.add_argument("--work", type=Path, default=Path("data/shards"))
    parser.add_argument("--out", type=Path, default=Path("reports/bench/shards"))
    parser.add_argument("--faiss", default="Flat")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    corpus_dir = args.work / f"corpus-{args.docs}"
    if not (corpus_dir / "corpus.jsonl").exists():
        generate(args.source, args.index, args.docs, corpus_dir, seed=args.seed)
    queries = [str(obj["text"]) for _, obj in read_jsonl_objects(corpus_dir / "queries.jsonl")][: args.queries]
    root = IndexRoot(args.work / "indexes")
    results: dict[str, Any] = {}
    baseline: dict[str, list[list[str]]] | None = None
    for count in [int(s) for s in args.shards.split(",")]:
        started = time.perf_counter()
        build_index(corpus_dir / "corpus.jsonl", f"s{count}", root,
                    BuildOptions(progress=False, faiss_factory=args.faiss, splade_doc_vectors=False, shards=count),
                    vectors=corpus_dir / "vectors")
        build_s = round(time.perf_counter() - started, 1)
        print(f"S={count}: built in {build_s} s", flush=True)
        searcher = Searcher.open(root.resolve(f"s{count}"), OpenOptions(verify="off"))
        try:
            latency, tops = measure(searcher, queries)
        finally:
            searcher.close()
        baseline = baseline or tops
        equal = all(tops[m] == baseline[m] for m in METHODS)
        results[str(count)] = {"build_s": build_s, "latency": latency, "equal_to_one": equal}
    report = {"command": "python -m eval.bench.shards " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
              "docs": args.docs, "faiss": args.faiss, "queries": len(queries), "results": results,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shards.json").write_text(json.dumps(report, indent=2))
    (args.out / "shards.md").write_text(markdown(report))
    print(markdown(report))
    shutil.rmtree(args.work / "indexes", ignore_errors=True)


if __name__ == "__main__":
    main()
