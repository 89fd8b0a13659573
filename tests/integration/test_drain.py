"""Graceful drain (issue 35, item 3): on SIGTERM the server stops admitting, finishes what is in flight, checkpoints
the write-ahead log and exits 0; a rolling restart of two replicas behind a small retrying proxy loses no request."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from indexes.indexing.builder import BuildOptions, build_index
from indexes.storage.docstore.layout import IndexRoot
from indexes.storage.docstore.manifest import Manifest
from indexes.storage.docstore.wal import FILE as WAL_FILE
from tests.support import cranfield_docs, write_jsonl
from tests.support.server import Server, free_port

QUERIES = ["wing flutter", "boundary layer transition", "heat transfer slabs", "slipstream lift"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("drain")
    corpus = write_jsonl(folder / "corpus.jsonl", cranfield_docs(60))
    build_index(corpus, "small", IndexRoot(folder / "root"),
                BuildOptions(retrievers=("bm25", "splade"), progress=False, batch_size=16))
    return folder / "root"


def _copy(root: Path, into: Path) -> Path:
    shutil.copytree(IndexRoot(root).resolve("small"), into / "small")
    return into


@pytest.mark.slow  # a server drained under three long batches (about a minute)
def test_sigterm_finishes_in_flight_requests_flushes_and_exits_0(root: Path, tmp_path: Path) -> None:
    served = _copy(root, tmp_path / "served")
    # Three batches in flight at once: the server admits them all (the defaults would shed two with 429).
    server = Server(served, args=["--drain-seconds", "60", "--max-concurrent", "4", "--max-queued", "4"])
    url = f"{server.url}/v1/indexes/small"
    doc = cranfield_docs(61)[60]
    written = httpx.put(f"{url}/documents", timeout=60, json={"documents": [
        {"_id": "written-before-sigterm", "title": doc["title"], "text": doc["text"]}]})
    assert written.status_code == 200
    seq = written.json()["seq"]
    assert (served / "small" / WAL_FILE).stat().st_size > 0  # acknowledged, only in the log so far
    slow = {"queries": [f"{q} {i}" for i in range(150) for q in QUERIES], "retrievers": ["splade", "bm25"], "k": 5}
    with ThreadPoolExecutor(4) as pool:
        in_flight = [pool.submit(httpx.post, f"{url}/search/batch", json=slow, timeout=120) for _ in range(3)]
        time.sleep(1.0)  # the batches are running
        assert not any(f.done() for f in in_flight), "make the batches longer: they finished before SIGTERM"
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        try:  # no new request is admitted: the socket is closed, or the answer is 503 with Retry-After
            r = httpx.post(f"{url}/search", json={"query": "wing"}, timeout=5)
            assert r.status_code == 503 and "retry-after" in r.headers, r.text
        except httpx.TransportError:
            pass
        answers = [f.result() for f in in_flight]
    assert all(r.status_code == 200 and len(r.json()["results"]) == len(slow["queries"]) for r in answers), \
        [(r.status_code, r.text[:300]) for r in answers]
    assert server.proc.wait(timeout=90) == 0, server.log()[-3000:]
    assert "Traceback" not in server.log()
    # The log was checkpointed: empty, and the manifest holds the write's seq.
    assert (served / "small" / WAL_FILE).stat().st_size == 0
    assert Manifest.read(served / "small").live_seq == seq
    again = Server(served)
    try:
        hits = httpx.post(f"{again.url}/v1/indexes/small/search", timeout=60,
                          json={"query": doc["title"], "retrievers": ["bm25"], "k": 3}).json()["hits"]
        assert "written-before-sigterm" in {h["id"] for h in hits}
    finally:
        again.stop()


class RetryingProxy:
    """Two replicas behind one address: each request goes to the next replica, and to the other one when a replica
    refuses the connection, drops it before answering, or answers 503 (draining); as a load balancer does."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.retries = 0
        self._next = 0
        app = Starlette(routes=[Route("/{path:path}", self.forward, methods=["GET", "POST", "PUT", "DELETE"])])
        self.server = uvicorn.Server(uvicorn.Config(app, port=self.port, log_level="warning", lifespan="off",
                                                    loop="asyncio"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        headers = {"content-type": request.headers.get("content-type", "application/json")}
        self._next += 1
        async with httpx.AsyncClient(timeout=120) as client:
            for attempt in range(200):  # a replica restarts in seconds
                backend = self.backends[(self._next + attempt) % len(self.backends)]
                try:
                    r = await client.request(request.method, backend + request.url.path, content=body, headers=headers)
                except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                    r = None
                if r is not None and r.status_code != 503:
                    return Response(r.content, r.status_code, media_type=r.headers.get("content-type"))
                self.retries += 1
                await asyncio.sleep(0.05)
        return Response(json.dumps({"error": "no replica answered"}), 502)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.mark.slow  # two servers restarted in turn under load (about a minute)
def test_a_rolling_restart_of_two_replicas_loses_no_request(root: Path, tmp_path: Path) -> None:
    admits = ["--max-concurrent", "4", "--max-queued", "4"]  # the 4 clients: the defaults would shed with 429
    replicas = [Server(_copy(root, tmp_path / f"r{i}"), args=["--drain-seconds", "30", *admits]) for i in range(2)]
    proxy = RetryingProxy([r.url for r in replicas])
    stop = threading.Event()
    answers: list[int] = []

    def client(n: int) -> None:
        with httpx.Client(timeout=120) as session:
            i = n
            while not stop.is_set():
                r = session.post(f"{proxy.url}/v1/indexes/small/search", json={"query": QUERIES[i % 4], "k": 5})
                answers.append(r.status_code if r.status_code != 200 or r.json()["hits"] else -1)
                i += 1

    try:
        with ThreadPoolExecutor(4) as pool:
            clients = [pool.submit(client, n) for n in range(4)]
            time.sleep(2.0)
            for replica in replicas:  # one at a time: SIGTERM, drained exit 0, start again, ready
                before = len(answers)
                replica.proc.send_signal(signal.SIGTERM)
                assert replica.proc.wait(timeout=90) == 0, replica.log()[-3000:]
                replica.start()
                time.sleep(1.0)
                assert len(answers) > before  # the other replica answered meanwhile
            stop.set()
            for c in clients:
                c.result()
    finally:
        stop.set()
        proxy.stop()
        for replica in replicas:
            replica.stop()
    assert answers and set(answers) == {200}, {code: answers.count(code) for code in set(answers)}
    assert len(answers) >= 40
