"""Single-query HTTP latency of a running server: p50/p95/p99 over a BEIR queries file.

    python -m eval.bench.http_latency --url http://127.0.0.1:8000 --index cranfield \
        --queries eval/datasets/cranfield/queries.jsonl.gz --out reports/http_latency.json

By default queries are sent one at a time after a warm-up, so the numbers are the latency a single
client sees; ``--concurrency N`` runs N clients and adds throughput. The JSON report records the
request body and the machine. ``overhead_ms`` is per request: HTTP time minus the ``took_ms`` the server
reports for that request (parsing, validation, threads, serialization, the client's own share).

Several ``--url`` (servers of different code or settings, up at once) are measured paired: every query
goes to each server in turn, the first server rotating, so machine drift hits all of them alike.
``--query-mode splade=onnx-int8`` (repeatable) goes into the request body.
"""

from __future__ import annotations

import argparse
import http.client
import json
import json as _json
import os
import platform
import statistics
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from indexes.storage.docstore.corpus import read_jsonl_objects
from retrieval.core.settings import parse_query_modes


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now (for a server a benchmark starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "p99": percentile(values, 99)}


class RawClient:
    """Keep-alive HTTP/1.1 through ``http.client``, one connection per thread and server: a client whose own
    cost per request is a fraction of httpx's, so ``overhead_ms`` is mostly the server's."""

    def __init__(self) -> None:
        self._local = threading.local()

    def post(self, url: str, json: dict) -> tuple[int, dict]:  # type: ignore[type-arg]
        parts = urllib.parse.urlsplit(url)
        connections = self._local.__dict__.setdefault("connections", {})
        connection = connections.get(parts.netloc)
        if connection is None:
            connection = connections[parts.netloc] = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        body = _json.dumps(json).encode()
        connection.request("POST", parts.path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        app = _app_ms(response.getheader("server-timing"))
        return response.status, {**_json.loads(data), "_app_ms": app} if response.status == 200 else {}


class HttpxClient:
    def __init__(self, connections: int) -> None:
        self._client = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=connections))

    def post(self, url: str, json: dict) -> tuple[int, dict]:  # type: ignore[type-arg]
        response = self._client.post(url, json=json)
        app = _app_ms(response.headers.get("server-timing"))
        return response.status_code, {**response.json(), "_app_ms": app} if response.status_code == 200 else {}


def _app_ms(header: str | None) -> float | None:
    """The server's ``Server-Timing: app;dur=X`` (time inside the application), if it sends one."""
    for part in (header or "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name == "app" and dur:
            return float(dur)
    return None


def emit(report: dict, out: Path | None) -> None:  # type: ignore[type-arg]
    """Print the JSON report and write it to ``out`` when given."""
    print(json.dumps(report, indent=2))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", action="append", help="Server base URL, repeatable (default http://127.0.0.1:8000).")
    parser.add_argument("--label", action="append", help="A name per --url for the report (default: the URL).")
    parser.add_argument("--query-mode", action="append", default=[], metavar="NAME=MODE")
    parser.add_argument("--index", required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--retrievers", default="bm25,splade,dense")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=1, help="Parallel clients (1 = latency of one client).")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw",
                        help="raw: http.client keep-alive (little client cost); httpx: what earlier reports used.")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    queries = [obj["text"] for _, obj in read_jsonl_objects(args.queries)][: args.limit]
    body: dict = {"k": args.k, "retrievers": args.retrievers.split(","), "fusion": {"method": "rrf"}}  # type: ignore[type-arg]
    if args.query_mode:
        body["query_mode"] = parse_query_modes(args.query_mode)
    bases = args.url or ["http://127.0.0.1:8000"]
    labels = args.label or bases
    urls = [f"{base}/v1/indexes/{args.index}/search" for base in bases]
    latencies: dict[str, list[float]] = {label: [] for label in labels}
    overheads: dict[str, list[float]] = {label: [] for label in labels}
    server_ms: dict[str, list[float]] = {label: [] for label in labels}
    app_ms: dict[str, list[float]] = {label: [] for label in labels}
    errors = 0
    client = RawClient() if args.client == "raw" else HttpxClient(args.concurrency * len(urls))
    if True:
        for query in queries[: args.warmup]:
            for url in urls:
                status, _ = client.post(url, json={**body, "query": query})
                if status != 200:
                    raise SystemExit(f"{url} answered {status} during warm-up")

        def one(item: tuple[int, str]) -> None:
            nonlocal errors
            i, query = item
            order = list(range(len(urls)))
            order = order[i % len(urls):] + order[: i % len(urls)]
            for j in order:
                started = time.perf_counter()
                status, data = client.post(urls[j], json={**body, "query": query})
                elapsed = (time.perf_counter() - started) * 1000.0
                latencies[labels[j]].append(elapsed)
                if status != 200:
                    errors += 1
                    continue
                took = data["took_ms"]
                if data.get("_app_ms") is not None:
                    app_ms[labels[j]].append(data["_app_ms"] - took)
                server_ms[labels[j]].append(took)
                overheads[labels[j]].append(elapsed - took)

        wall = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            list(pool.map(one, enumerate(queries)))
        wall = time.perf_counter() - wall

    def summary(label: str) -> dict:  # type: ignore[type-arg]
        return {"http_ms": {**percentiles(latencies[label]), "mean": statistics.fmean(latencies[label])},
                "server_took_ms": {"p50": percentile(server_ms[label], 50), "p95": percentile(server_ms[label], 95)},
                "overhead_ms": percentiles(overheads[label]),
                # of the overhead: inside the application (routing, validation, threads, serialization) ...
                **({"app_overhead_ms": percentiles(app_ms[label])} if app_ms[label] else {})}

    report = {
        "urls": urls, "client": args.client, "request": body, "queries": len(queries), "concurrency": args.concurrency, "errors": errors,
        "queries_per_second": len(queries) * len(urls) / wall,
        **(summary(labels[0]) if len(urls) == 1 else {"servers": {label: summary(label) for label in labels}}),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
