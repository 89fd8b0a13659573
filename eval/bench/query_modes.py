"""Single-query encoding in every query mode, interleaved in one process, with each mode's distance from torch.

    python -m eval.bench.query_modes data/indexes/beir-cranfield --queries eval/datasets/cranfield/queries.jsonl.gz \\
        --out reports/bench/latency/query_modes.json

Each query goes through every mode of the index's SPLADE and dense retrievers in turn (the first mode
rotating), so the machine's drift hits all modes alike; the timed call is the searcher's own
``encode_queries`` (SPLADE quantized, ``tokens`` including its IDF lookups). Before timing, every mode's
vectors are compared with torch's: cosine per query (min and mean), and for SPLADE the share of torch's
terms kept.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from eval.bench.http_latency import emit, percentiles
from indexes.kinds import get_kind
from indexes.storage.docstore.corpus import read_jsonl_objects
from retrieval.search.pipeline import Searcher


def _cosine(a: Any, b: Any) -> float:
    if isinstance(a, dict):
        dot = sum(w * b.get(t, 0) for t, w in a.items())
        norm = math.sqrt(sum(w * w for w in a.values()) * sum(w * w for w in b.values()))
        return dot / norm if norm else 0.0
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=2, help="Passes over the queries.")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    queries = [obj["text"] for _, obj in read_jsonl_objects(args.queries)]
    searcher = Searcher.open(args.index, verify="off")
    report: dict[str, Any] = {"index": str(args.index), "queries": len(queries), "rounds": args.rounds,
                              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                          "python": platform.python_version()}}
    try:
        for name, entry in searcher.manifest.retrievers.items():
            modes = list(get_kind(entry.kind).query_modes)
            if not modes:
                continue
            side = searcher.searchers[name]

            def encode(query: str, mode: str) -> Any:
                return side.encode_queries([query], mode)[0]  # type: ignore[attr-defined]

            reference = [encode(q, "torch") for q in queries]
            closeness: dict[str, Any] = {}
            for mode in modes[1:]:
                vectors = [encode(q, mode) for q in queries]
                cosines = [_cosine(v, r) for v, r in zip(vectors, reference)]
                closeness[mode] = {"cosine_min": min(cosines), "cosine_mean": statistics.fmean(cosines)}
                if isinstance(reference[0], dict):
                    kept = [len(set(v) & set(r)) / max(len(r), 1) for v, r in zip(vectors, reference)]
                    closeness[mode]["torch_terms_kept_mean"] = statistics.fmean(kept)
            times: dict[str, list[float]] = {mode: [] for mode in modes}
            for i, query in enumerate(queries * args.rounds):
                order = modes[i % len(modes):] + modes[: i % len(modes)]
                for mode in order:
                    started = time.perf_counter()
                    encode(query, mode)
                    times[mode].append((time.perf_counter() - started) * 1000.0)
            report[name] = {"kind": entry.kind,
                            "encode_ms": {mode: percentiles(v) for mode, v in times.items()},
                            "vs_torch": closeness}
            print(name, {mode: round(report[name]["encode_ms"][mode]["p50"], 3) for mode in modes}, flush=True)
    finally:
        searcher.close()
    emit(report, args.out)


if __name__ == "__main__":
    main()
