"""Live-write throughput of a running server: upserts and deletes over HTTP, and what they do to searches.

    hybrid serve --index-root data/live &
    python -m eval.bench.upsert --url http://127.0.0.1:8000 --index cranfield \\
        --corpus eval/datasets/cranfield/corpus.jsonl.gz --out reports/upsert_cranfield.json

Documents are taken from ``--corpus`` under new ids (``bench-<id>``), upserted at each batch size, checked
to be found by every retriever right after the acknowledgement, then deleted again, so the index ends as it
began. A reader thread sends single hybrid queries the whole time; their latency is reported idle and
during writes.
"""

from __future__ import annotations

import argparse
import platform
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from eval.bench.http_latency import emit, percentiles
from indexes.storage.docstore.corpus import iter_documents

RETRIEVERS = ("bm25", "splade", "dense")


class Reader(threading.Thread):
    """Single hybrid queries in a loop; each latency is tagged with whether a write was in flight."""

    def __init__(self, client: httpx.Client, url: str, queries: list[str]) -> None:
        super().__init__(daemon=True)
        self.client, self.url, self.queries = client, url, queries
        self.writing = threading.Event()
        self.stop = threading.Event()
        self.idle: list[float] = []
        self.busy: list[float] = []
        self.errors = 0

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            during = self.writing.is_set()
            started = time.perf_counter()
            r = self.client.post(self.url, json={"query": self.queries[i % len(self.queries)], "k": 10})
            ms = (time.perf_counter() - started) * 1000
            if r.status_code != 200:
                self.errors += 1
            (self.busy if during and self.writing.is_set() else self.idle).append(ms)
            i += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--index", required=True)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--batches", default="1,32,256", help="Upsert batch sizes.")
    parser.add_argument("--docs", type=int, default=256, help="Documents upserted at each batch size (batch 1: a tenth).")
    parser.add_argument("--api-key", default=None, help="An admin key, if the server has keys.")
    parser.add_argument("--no-reader", action="store_true", help="No concurrent searches: write throughput alone.")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    client = httpx.Client(headers=headers, timeout=600)
    base = f"{args.url}/v1/indexes/{args.index}"
    before = client.get(base).json()["documents"]
    docs = [d for d in iter_documents(args.corpus) if d.contents.strip()]
    reader = Reader(httpx.Client(headers=headers, timeout=600), f"{base}/search", [d.title or d.text[:80] for d in docs[:200]])
    if not args.no_reader:
        reader.start()
        time.sleep(5)  # idle latency first
    settings: list[dict[str, Any]] = []
    offset = 0
    for batch in [int(b) for b in args.batches.split(",")]:
        count = max(batch, args.docs // 10 if batch == 1 else args.docs)
        chunk = docs[offset : offset + count]
        offset += count
        took, encode, apply, visible_ms, missed = 0.0, 0.0, 0.0, [], 0
        for start in range(0, len(chunk), batch):
            part = chunk[start : start + batch]
            body = {"documents": [{"_id": f"bench-{d.id}", "title": d.title, "text": d.text} for d in part]}
            reader.writing.set()
            started = time.perf_counter()
            r = client.put(f"{base}/documents", json=body)
            took += time.perf_counter() - started
            reader.writing.clear()
            r.raise_for_status()
            encode += r.json()["encode_ms"] / 1000
            apply += r.json()["apply_ms"] / 1000
            # Right after the acknowledgement: is the first document found by each retriever alone?
            probe = part[0]
            acked = time.perf_counter()
            for name in RETRIEVERS:
                hits = client.post(f"{base}/search", json={"query": probe.contents[:300], "k": 10, "retrievers": [name]}).json()["hits"]
                missed += f"bench-{probe.id}" not in {h["id"] for h in hits}
            visible_ms.append((time.perf_counter() - acked) * 1000)
        settings.append({"batch": batch, "documents": len(chunk), "seconds": round(took, 3),
                         "docs_per_second": round(len(chunk) / took, 2), "encode_s": round(encode, 3), "apply_s": round(apply, 3),
                         "apply_ms_per_batch": round(apply * 1000 * batch / len(chunk), 2),
                         "ack_to_found_by_all_3_ms": percentiles(visible_ms), "probes_not_found": missed})
        print(f"batch {batch:>4}: {len(chunk)} docs in {took:.1f} s = {len(chunk) / took:.1f} docs/s "
              f"(encode {encode:.1f} s, apply {apply:.2f} s); not found right after ack: {missed}", flush=True)
    ids = [f"bench-{d.id}" for d in docs[:offset]]
    started = time.perf_counter()
    deleted = 0
    for start in range(0, len(ids), 1000):
        reader.writing.set()
        deleted += client.request("DELETE", f"{base}/documents", json={"ids": ids[start : start + 1000]}).json()["deleted"]
        reader.writing.clear()
    delete_s = time.perf_counter() - started
    time.sleep(3)
    reader.stop.set()
    if reader.is_alive():
        reader.join()
    after = client.get(base).json()["documents"]
    report = {
        "machine": {"platform": platform.platform(), "cpus": __import__("os").cpu_count()},
        "index": args.index, "documents_before": before, "documents_after": after,
        "upserts": settings,
        "delete": {"ids": len(ids), "deleted": deleted, "seconds": round(delete_s, 3), "ids_per_second": round(len(ids) / delete_s, 1)},
        "concurrent_reader": not args.no_reader,
        "search_while_writing_ms": None if args.no_reader else {
                                    "idle": percentiles(reader.idle), "during_writes": percentiles(reader.busy) if reader.busy else None,
                                    "queries_idle": len(reader.idle), "queries_during_writes": len(reader.busy),
                                    "errors": reader.errors},
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
