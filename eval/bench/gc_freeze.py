"""What ``gc.freeze()`` after opening an index saves, measured in one process, frozen and not, alternating.

    python -m eval.bench.gc_freeze data/indexes/beir-cranfield --queries eval/datasets/cranfield/queries.jsonl.gz \\
        --query-mode splade=onnx-int8 --query-mode dense=onnx-int8 --out reports/bench/latency/gc_freeze.json

``Searcher.open`` freezes what it loaded (``retrieval/core/gc_tuning.py``); this script unfreezes and
freezes again between rounds, so both states see the same machine. Each round times every query alone
(hybrid RRF, k=10) and then all of them as one batch.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from eval.bench.http_latency import emit, percentiles
from indexes.storage.docstore.corpus import read_jsonl_objects
from retrieval.core.settings import parse_query_modes
from retrieval.search.pipeline import Searcher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="Rounds per state, alternating.")
    parser.add_argument("--query-mode", action="append", default=[], metavar="NAME=MODE")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    queries = [obj["text"] for _, obj in read_jsonl_objects(args.queries)][: args.limit]
    modes = parse_query_modes(args.query_mode)
    searcher = Searcher.open(args.index, verify="off")
    single: dict[str, list[float]] = {"frozen": [], "unfrozen": []}
    batch: dict[str, list[float]] = {"frozen": [], "unfrozen": []}
    try:
        searcher.batch_search(queries[:20], query_modes=modes)
        for _ in range(args.rounds):
            for state in ("unfrozen", "frozen"):
                gc.unfreeze()
                gc.collect()
                if state == "frozen":
                    gc.freeze()
                for query in queries:
                    started = time.perf_counter()
                    searcher.search(query, k=10, query_modes=modes)
                    single[state].append((time.perf_counter() - started) * 1000.0)
                started = time.perf_counter()
                searcher.batch_search(queries, k=10, query_modes=modes)
                batch[state].append((time.perf_counter() - started) * 1000.0 / len(queries))
        tracked = len(gc.get_objects()) + gc.get_freeze_count()
    finally:
        searcher.close()
    report: dict[str, Any] = {
        "index": str(args.index), "queries": len(queries), "rounds": args.rounds, "query_modes": modes,
        "tracked_objects": tracked,
        "single_ms": {s: percentiles(v) | {"mean": statistics.fmean(v)} for s, v in single.items()},
        "batch_ms_per_query": {s: statistics.fmean(v) for s, v in batch.items()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    for state in ("unfrozen", "frozen"):
        print(f"{state}: single p50 {report['single_ms'][state]['p50']:.2f} ms, mean {report['single_ms'][state]['mean']:.2f} ms; "
              f"batch {report['batch_ms_per_query'][state]:.2f} ms a query", flush=True)
    emit(report, args.out)


if __name__ == "__main__":
    main()
