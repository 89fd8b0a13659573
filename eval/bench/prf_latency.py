"""Single-query latency of PRF and query-adaptive fusion against their bases, interleaved.

    python -m eval.bench.prf_latency data/indexes/beir-cranfield \\
        --queries eval/datasets/cranfield/queries.jsonl.gz --out reports/quality/prf_latency.json

Each query runs every configuration back to back (library ``Searcher.search``, k=10, the server's
default depth 100), so the machine's speed changes hit all of them alike. The report gives p50/p95 of
the searcher's ``took_ms`` per configuration and its ratio to its base (the same retrievers without
PRF, or plain weighted fusion for the adaptive one).
"""

from __future__ import annotations

import argparse
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.bench.http_latency import emit, percentiles
from indexes.storage.docstore.corpus import read_jsonl_objects
from retrieval.core.types import PrfConfig
from retrieval.search.fusion import Adaptive, FusionConfig
from retrieval.search.pipeline import Searcher


@dataclass
class Config:
    name: str
    base: str | None  # the configuration this one's cost is compared with
    options: dict[str, Any] = field(default_factory=dict)


WEIGHTS = {"bm25": 0.25, "splade": 0.5, "dense": 1.0}
# A fit `hybrid eval beir --method qpp:bm25+splade+dense` printed for Cranfield; any coefficients cost the same.
ADAPTIVE = Adaptive({"nqc": 0.5, "margin": -1.0, "agreement": 1.0})

CONFIGS = [
    Config("bm25", None, {"retrievers": ["bm25"]}),
    Config("bm25+rm3", "bm25", {"retrievers": ["bm25"], "prf": {"bm25": PrfConfig("rm3")}}),
    Config("bm25+rocchio", "bm25", {"retrievers": ["bm25"], "prf": {"bm25": PrfConfig("rocchio")}}),
    Config("splade", None, {"retrievers": ["splade"]}),
    Config("splade+rocchio", "splade", {"retrievers": ["splade"], "prf": {"splade": PrfConfig("rocchio")}}),
    Config("dense", None, {"retrievers": ["dense"]}),
    Config("dense+average", "dense", {"retrievers": ["dense"], "prf": {"dense": PrfConfig("average")}}),
    Config("dense+rocchio", "dense", {"retrievers": ["dense"], "prf": {"dense": PrfConfig("rocchio")}}),
    Config("weighted:bm25+splade+dense", None, {"fusion": FusionConfig("weighted", weights=WEIGHTS)}),
    Config("qpp:bm25+splade+dense", "weighted:bm25+splade+dense",
           {"fusion": FusionConfig("weighted", weights=WEIGHTS, adaptive=ADAPTIVE)}),
    Config("weighted:bm25+rm3+splade+dense+average", "weighted:bm25+splade+dense",
           {"fusion": FusionConfig("weighted", weights=WEIGHTS),
            "prf": {"bm25": PrfConfig("rm3"), "dense": PrfConfig("average")}}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", type=Path, help="An index folder with bm25, splade and dense retrievers.")
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=100, help="Queries to time (after 10 warm-up queries).")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    queries = [obj["text"] for _, obj in read_jsonl_objects(args.queries)]
    searcher = Searcher.open(args.index)
    try:
        for query in queries[:10]:
            for config in CONFIGS:
                searcher.search(query, k=10, **config.options)
        took: dict[str, list[float]] = {c.name: [] for c in CONFIGS}
        for query in queries[10 : 10 + args.limit]:
            for config in CONFIGS:
                took[config.name].append(searcher.search(query, k=10, **config.options).took_ms)
    finally:
        searcher.close()
    rows = {}
    for config in CONFIGS:
        stats = {k: round(v, 2) for k, v in percentiles(took[config.name]).items()}
        base = percentiles(took[config.base])["p50"] if config.base else None
        rows[config.name] = {**stats, "base": config.base,
                             "p50_vs_base": round(stats["p50"] / base, 2) if base else None}
    emit({"index": str(args.index), "queries": len(took[CONFIGS[0].name]), "k": 10, "depth": "server default (100)",
          "configs": rows, "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}, args.out)


if __name__ == "__main__":
    main()
