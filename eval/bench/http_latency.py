"""Single-query HTTP latency of a running server: p50/p95/p99 over a BEIR queries file.

    python -m eval.bench.http_latency --url http://127.0.0.1:8000 --index cranfield \
        --queries eval/datasets/cranfield/queries.jsonl.gz --out reports/http_latency.json

By default queries are sent one at a time after a warm-up, so the numbers are the latency a single
client sees; ``--concurrency N`` runs N clients and adds throughput. The JSON report records the
request body and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from indexes.storage.corpus import read_jsonl_objects


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def percentiles(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "p99": percentile(values, 99)}


def emit(report: dict, out: Path | None) -> None:  # type: ignore[type-arg]
    """Print the JSON report and write it to ``out`` when given."""
    print(json.dumps(report, indent=2))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--index", required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--retrievers", default="bm25,splade,dense")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=1, help="Parallel clients (1 = latency of one client).")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    queries = [obj["text"] for _, obj in read_jsonl_objects(args.queries)][: args.limit]
    body = {"k": args.k, "retrievers": args.retrievers.split(","), "fusion": {"method": "rrf"}}
    url = f"{args.url}/v1/indexes/{args.index}/search"
    latencies: list[float] = []
    server_ms: list[float] = []
    errors = 0
    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=args.concurrency)) as client:
        for query in queries[: args.warmup]:
            client.post(url, json={**body, "query": query}).raise_for_status()

        def one(query: str) -> None:
            nonlocal errors
            started = time.perf_counter()
            response = client.post(url, json={**body, "query": query})
            latencies.append((time.perf_counter() - started) * 1000.0)
            if response.status_code != 200:
                errors += 1
                return
            server_ms.append(response.json()["took_ms"])

        wall = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            list(pool.map(one, queries))
        wall = time.perf_counter() - wall
    report = {
        "url": url, "request": body, "queries": len(latencies), "concurrency": args.concurrency, "errors": errors,
        "queries_per_second": len(latencies) / wall,
        "http_ms": {**percentiles(latencies), "mean": statistics.fmean(latencies)},
        "server_took_ms": {"p50": percentile(server_ms, 50), "p95": percentile(server_ms, 95)},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
