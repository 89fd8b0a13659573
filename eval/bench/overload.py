"""Overload: a server under 1x, 2x and 4x its capacity, open loop, with writes mixed in (issue 35, item 1).

    python -m eval.bench.overload --index-root data/indexes --index cranfield --seconds 20 \
        --out reports/overload/cranfield.json

The index is copied to a temporary root (the run writes to it) and served by ``hybrid serve`` in a process of its
own, with ``--max-concurrent``/``--max-queued`` when given (else the settings' defaults, sized from the cores).
Then, against that one server:

1. *capacity*: ``max_concurrent`` clients in a closed loop (every one admitted, none queued): searches per second;
2. *1x, 2x, 4x*: searches arrive as a Poisson process at that multiple of the capacity, whatever the answers
   (open loop, as real clients do), one in ``--write-every`` an upsert of one new document;
3. *unloaded*, before every load phase and after the last: one client, one search at a time, the latency a request
   sees on an idle server. Each phase is compared with the mean p99 of the two unloaded runs beside it, so that
   the machine's own drift (other work on the same cores) moves both sides of the ratio alike.

Per phase the report gives the answers by status, the latency of admitted searches (200), shed answers without
``Retry-After``, 5xx other than 503, and the server's RSS (sampled every 0.25 s). At the end every acknowledged
write is searched for by its id. The targets (issue 35): admitted p99 <= 3x the unloaded p99; no 5xx but 503;
RSS bounded (the 4x phase's peak within 25% of the 1x phase's); every acknowledged write found.

The client is a small HTTP/1.1 client on asyncio (keep-alive connections, requests written as prepared bytes) so
that its own CPU, on the same cores as the server, stays small next to the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from eval.bench.http_latency import emit, free_port, percentile
from eval.bench.soak import rss_kib
from indexes.storage.docstore.corpus import read_jsonl_objects
from indexes.storage.docstore.layout import IndexRoot

MARKER = "overloadmarker"  # a word only the run's own documents hold


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body


class Client:
    """Keep-alive connections to one host, opened as needed: an open-loop request never waits for another."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._idle: list[Connection] = []

    @staticmethod
    def prepare(method: str, path: str, body: dict[str, Any], host: str) -> bytes:
        data = json.dumps(body).encode()
        return (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode() + data

    async def send(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        reused = bool(self._idle)
        connection = self._idle.pop() if reused else Connection(*await asyncio.open_connection(self.host, self.port))
        try:
            status, headers, body = await connection.request(raw)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            connection.writer.close()
            if reused and (not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial):
                # An idle connection the server had closed (its keep-alive timeout): the request never reached
                # it; send it again on a new one, as HTTP clients do.
                self._idle.clear()
                return await self.send(raw)
            raise
        except BaseException:
            connection.writer.close()
            raise
        if headers.get("connection", "").lower() == "close":
            connection.writer.close()
        else:
            self._idle.append(connection)
        return status, headers, body

    def close(self) -> None:
        for connection in self._idle:
            connection.writer.close()
        self._idle.clear()


class Sampler:
    """The server's RSS every 0.25 s while a phase runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.values: list[int] = []

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.values.append(rss_kib(self.pid))
            try:
                await asyncio.wait_for(stop.wait(), 0.25)
            except asyncio.TimeoutError:
                pass


def summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {}
    return {"p50": percentile(latencies, 50), "p90": percentile(latencies, 90), "p99": percentile(latencies, 99),
            "max": max(latencies), "count": len(latencies)}


async def closed_loop(client: Client, raws: list[bytes], clients: int, seconds: float) -> tuple[float, list[float]]:
    """``clients`` searching back to back for ``seconds``: (successful searches per second, their latencies)."""
    stop = time.perf_counter() + seconds
    latencies: list[float] = []

    async def one(n: int) -> None:
        i = n
        while time.perf_counter() < stop:
            started = time.perf_counter()
            status, _, _ = await client.send(raws[i % len(raws)])
            if status == 200:
                latencies.append((time.perf_counter() - started) * 1000.0)
            i += clients

    began = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(clients)))
    return len(latencies) / (time.perf_counter() - began), latencies


async def open_loop(client: Client, raws: list[bytes], rate: float, seconds: float, write_every: int,
                    make_write: Any, pid: int, seed: int) -> dict[str, Any]:
    """Searches (and writes) arriving at ``rate`` a second for ``seconds``, as a Poisson process."""
    rng = random.Random(seed)
    statuses: dict[str, int] = {}
    admitted: list[float] = []
    shed_without_retry_after = 0
    errors: list[str] = []
    writes: dict[str, int] = {}
    tasks: list[asyncio.Task[None]] = []

    async def one(raw: bytes, write_id: str | None) -> None:
        nonlocal shed_without_retry_after
        started = time.perf_counter()
        try:
            status, headers, _ = await client.send(raw)
        except (OSError, asyncio.IncompleteReadError) as exc:
            errors.append(type(exc).__name__)
            return
        elapsed = (time.perf_counter() - started) * 1000.0
        key = f"{'write' if write_id else 'search'} {status}"
        statuses[key] = statuses.get(key, 0) + 1
        if status in (429, 503) and "retry-after" not in headers:
            shed_without_retry_after += 1
        if write_id is not None:
            writes[write_id] = status
        elif status == 200:
            admitted.append(elapsed)

    stop = asyncio.Event()
    sampler = Sampler(pid)
    sampling = asyncio.create_task(sampler.run(stop))
    began = time.perf_counter()
    at, n = 0.0, 0
    while at < seconds:
        delay = began + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if write_every and n % write_every == write_every - 1:
            write_id, raw = make_write()
            tasks.append(asyncio.create_task(one(raw, write_id)))
        else:
            tasks.append(asyncio.create_task(one(raws[n % len(raws)], None)))
        n += 1
        at += rng.expovariate(rate)
    await asyncio.gather(*tasks)
    stop.set()
    await sampling
    five_xx = {k: v for k, v in statuses.items() if k.split()[1].startswith("5") and not k.endswith(" 503")}
    return {"offered_per_second": rate, "seconds": seconds, "arrivals": n,
            "answered_per_second": sum(statuses.values()) / (time.perf_counter() - began),
            "statuses": dict(sorted(statuses.items())), "transport_errors": len(errors),
            "admitted_latency_ms": summary(admitted), "shed_without_retry_after": shed_without_retry_after,
            "five_xx_other_than_503": sum(five_xx.values()),
            "rss_mib": {"min": min(sampler.values) / 1024, "max": max(sampler.values) / 1024} if sampler.values else {},
            "writes": writes}


def found_ids(url: str, index: str, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        body = {"query": MARKER, "retrievers": ["bm25"], "k": len(chunk), "filter": {"terms": {"ovl": chunk}}}
        r = httpx.post(f"{url}/v1/indexes/{index}/search", json=body, timeout=120)
        r.raise_for_status()
        found |= {h["id"] for h in r.json()["hits"]}
    return found


def start_server(root: Path, port: int, limits: list[str]) -> subprocess.Popen[bytes]:
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--index-root", str(root), "--port",
                             str(port), *limits], stdout=log, stderr=log)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise SystemExit(f"server died: {log.read().decode()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/ready", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("server not ready in 300 s")


async def run(args: argparse.Namespace, pid: int, port: int) -> dict[str, Any]:
    path = f"/v1/indexes/{args.index}/search"
    host = f"127.0.0.1:{port}"
    queries = [obj["text"] for _, obj in read_jsonl_objects(args.queries)]
    raws = [Client.prepare("POST", path, {"query": q, "k": 10}, host) for q in queries]
    rng = random.Random(7)
    corpus = [obj for _, obj in read_jsonl_objects(args.corpus)][:500]
    counter = iter(range(10**9))

    def make_write() -> tuple[str, bytes]:
        doc = rng.choice(corpus)
        doc_id = f"ovl-{next(counter)}"
        body = {"documents": [{"_id": doc_id, "title": doc.get("title", ""), "text": f"{doc['text']} {MARKER}",
                               "metadata": {"ovl": doc_id}}]}
        return doc_id, Client.prepare("PUT", f"/v1/indexes/{args.index}/documents", body, host)

    client = Client("127.0.0.1", port)
    # Warm-up: the first searches after start compile and load what later ones reuse (numba, ONNX, caches).
    await closed_loop(client, raws, max(2, args.max_concurrent), 10.0)
    capacity, saturated = await closed_loop(client, raws, args.max_concurrent, args.seconds)
    report: dict[str, Any] = {"capacity": {"searches_per_second": capacity, "clients": args.max_concurrent,
                                           "latency_ms": summary(saturated)},
                              "unloaded_runs_ms": [], "phases": {}}
    all_unloaded: list[float] = []
    for factor in [*args.factors, None]:
        client.close()
        await asyncio.sleep(1.0)  # the queue of the phase before drains
        _, unloaded = await closed_loop(client, raws, 1, args.unloaded_seconds)
        report["unloaded_runs_ms"].append(summary(unloaded))
        all_unloaded += unloaded
        if factor is None:
            break
        client.close()
        phase = await open_loop(client, raws, capacity * factor, args.seconds, args.write_every, make_write, pid,
                                seed=factor)
        report["phases"][f"{factor}x"] = phase
    client.close()
    report["unloaded_latency_ms"] = summary(all_unloaded)
    return report


def check(report: dict[str, Any], url: str, index: str) -> dict[str, Any]:
    runs = report["unloaded_runs_ms"]
    beside = {k: (runs[i]["p99"] + runs[i + 1]["p99"]) / 2 for i, k in enumerate(report["phases"])}
    acknowledged = [i for p in report["phases"].values() for i, s in p["writes"].items() if s == 200]
    refused = [i for p in report["phases"].values() for i, s in p["writes"].items() if s != 200]
    found = found_ids(url, index, acknowledged + refused)
    phases = report["phases"]
    first, last = next(iter(phases.values())), list(phases.values())[-1]
    results = {
        "unloaded_p99_ms_beside": beside,
        "admitted_p99_over_unloaded_p99": {k: p["admitted_latency_ms"].get("p99", 0) / beside[k]
                                           for k, p in phases.items()},
        "five_xx_other_than_503": sum(p["five_xx_other_than_503"] for p in phases.values()),
        "transport_errors": sum(p["transport_errors"] for p in phases.values()),
        "shed_without_retry_after": sum(p["shed_without_retry_after"] for p in phases.values()),
        "rss_peak_growth_4x_over_1x": last["rss_mib"]["max"] / first["rss_mib"]["max"] - 1,
        "writes_acknowledged": len(acknowledged), "writes_refused": len(refused),
        "acknowledged_writes_found": len(set(acknowledged) & found),
        "refused_writes_found": len(set(refused) & found),
    }
    results["targets"] = {
        "admitted_p99_within_3x_unloaded": all(r <= 3.0 for r in results["admitted_p99_over_unloaded_p99"].values()),
        "no_5xx_but_503": results["five_xx_other_than_503"] == 0 and results["transport_errors"] == 0,
        "shed_with_retry_after": results["shed_without_retry_after"] == 0,
        "rss_bounded": results["rss_peak_growth_4x_over_1x"] <= 0.25,
        "acknowledged_writes_found": results["acknowledged_writes_found"] == len(acknowledged),
    }
    for phase in phases.values():  # the per-write statuses are summed up above
        phase["writes"] = {str(s): sum(1 for v in phase["writes"].values() if v == s)
                           for s in sorted(set(phase["writes"].values()))}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index-root", type=Path, required=True)
    parser.add_argument("--index", default="cranfield")
    parser.add_argument("--queries", type=Path, default=Path("eval/datasets/cranfield/queries.jsonl.gz"))
    parser.add_argument("--corpus", type=Path, default=Path("eval/datasets/cranfield/corpus.jsonl.gz"),
                        help="Documents the writes copy (each with a new id).")
    parser.add_argument("--max-concurrent", type=int, default=None, help="Passed to hybrid serve (default: its own).")
    parser.add_argument("--max-queued", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=20.0, help="Length of the capacity phase and of each load.")
    parser.add_argument("--unloaded-seconds", type=float, default=10.0, help="Each unloaded run (4 of them).")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--write-every", type=int, default=50, help="One arrival in N is an upsert (0: none).")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from retrieval.core.settings import Settings

    defaults = Settings()
    args.max_concurrent = args.max_concurrent or defaults.max_concurrent
    max_queued = args.max_queued if args.max_queued is not None else defaults.max_queued
    limits = ["--max-concurrent", str(args.max_concurrent), "--max-queued", str(max_queued)]
    with tempfile.TemporaryDirectory(prefix="overload-") as tmp:
        root = Path(tmp)
        shutil.copytree(IndexRoot(args.index_root).resolve(args.index), root / args.index)
        port = free_port()
        server = start_server(root, port, limits)
        try:
            report = asyncio.run(run(args, server.pid, port))
            results = check(report, f"http://127.0.0.1:{port}", args.index)
        finally:
            server.terminate()
            server.wait(timeout=120)
    emit({"index": args.index, "server": {"max_concurrent": args.max_concurrent, "max_queued": max_queued},
          "request": {"query": "<cranfield query>", "k": 10}, "write_every": args.write_every,
          "results": results, **report,
          "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                      "load_average_at_end": os.getloadavg()}}, args.out)


if __name__ == "__main__":
    main()
