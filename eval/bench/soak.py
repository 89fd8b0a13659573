"""Bounded soak test of a running server: N clients for D seconds on loopback, errors, latency, RSS.

    python -m eval.bench.soak --url http://127.0.0.1:8000 --index cranfield --pid $(pgrep -f 'hybrid serve') \
        --clients 32 --seconds 300 --out reports/soak.json

RSS is sampled once a second from /proc/PID/status; "growth" compares the mean of the last 20% of
samples with the mean of the samples right after warm-up (20% of the time), which is what a leak in
the JVM bridge or the encoders would move. The run stops by itself after --seconds.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import httpx

from eval.bench.http_latency import emit, percentiles

QUERIES = [
    "heat transfer in laminar boundary layers", "supersonic flutter of panels", "similarity laws for models",
    'wing AND "flow" (heat*', "shock wave interaction with a boundary layer", "buckling of cylindrical shells",
    "hypersonic viscous flow over a flat plate", "title:wing~2 OR -boundary", "ablation of a blunt body",
]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def soak(url: str, index: str, pid: int | None, clients: int, seconds: float, api_key: str | None = None) -> dict:  # type: ignore[type-arg]
    endpoint = f"{url}/v1/indexes/{index}/search"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    errors: list[str] = []
    rss: list[tuple[float, int]] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(timeout=30, headers=headers) as session:
            i = n
            while time.monotonic() < stop:
                body = {"query": QUERIES[i % len(QUERIES)], "k": 10, "explain": i % 2 == 0}
                i += 1
                started = time.perf_counter()
                try:
                    r = session.post(endpoint, json=body)
                    ok = r.status_code == 200 and len(r.json()["hits"]) > 0
                    reason = f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    ok, reason = False, type(exc).__name__
                with lock:
                    latencies.append((time.perf_counter() - started) * 1000.0)
                    if not ok:
                        errors.append(reason)

    def sampler() -> None:
        begin = time.monotonic()
        while time.monotonic() < stop and pid:
            rss.append((time.monotonic() - begin, rss_kib(pid)))
            time.sleep(1.0)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)] + [threading.Thread(target=sampler)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report: dict = {"clients": clients, "seconds": seconds, "requests": len(latencies), "errors": len(errors),  # type: ignore[type-arg]
                    "error_kinds": sorted(set(errors)), "qps": len(latencies) / seconds,
                    "latency_ms": percentiles(latencies)}
    if rss:
        values = [v for _, v in rss]
        warm = values[len(values) // 5 : max(len(values) // 5 + 1, 2 * len(values) // 5)]
        tail = values[-max(1, len(values) // 5):]
        report["rss_kib"] = {"start": values[0], "after_warmup": sum(warm) / len(warm), "end": sum(tail) / len(tail),
                             "peak": max(values), "samples": len(values)}
        report["rss_growth_after_warmup"] = report["rss_kib"]["end"] / report["rss_kib"]["after_warmup"] - 1
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--index", required=True)
    parser.add_argument("--pid", type=int, default=None, help="Server process id, for RSS samples.")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    report = soak(args.url, args.index, args.pid, args.clients, min(args.seconds, 3600), args.api_key)
    emit(report, args.out)


if __name__ == "__main__":
    main()
