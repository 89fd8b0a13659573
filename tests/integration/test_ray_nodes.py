"""Ray across nodes that share no disk (issue 35, item 4), on three Ray nodes of this machine (``ray start --head``
and ``ray start --address``), each with its own temporary folders (tests/support/ray_nodes.py):

* a 2-shard build on the cluster: the encoder actors and the shard tasks run on the worker nodes, in their own
  folders, and the shards come back to the driver through the object store; the index equals the in-process build;
* serving with 2 replicas a shard, each replica fetching its shard onto its node from the object store (checked
  against the manifest): searches equal one process (SPLADE and dense hit for hit; BM25 with per-shard statistics,
  as on one machine); a worker node killed under load loses no search, and once the cluster recovers (the node
  back) the answers are those of before.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from indexes.indexing.builder import BuildOptions, build_index
from indexes.storage.docstore.layout import IndexRoot
from indexes.storage.docstore.manifest import Manifest
from retrieval.search.pipeline import Searcher
from tests.support import cranfield_docs, write_jsonl
from tests.support.server import free_port

pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # three Ray nodes, Ray Data, Ray Serve: several minutes on 2 cores

QUERIES = ["boundary layer transition at supersonic speeds", "heat transfer to a flat plate",
           "what similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    from tests.support.ray_nodes import RayCluster

    c = RayCluster(workers=2)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("nodes") / "corpus.jsonl", cranfield_docs(60))


@pytest.fixture(scope="module")
def built(cluster, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """``hybrid index build --ray HEAD --shards 2`` from the head node; where the work ran is watched."""
    from tests.support.ray_nodes import ray_env

    nodes = [cluster.head, *cluster.workers]
    seen: dict[str, set[str]] = {n.name: set() for n in nodes}
    done = threading.Event()

    def watch() -> None:  # the temporary folders the chunk and shard work makes, per node
        while not done.is_set():
            for n in nodes:
                seen[n.name] |= set(n.seen("hybrid-"))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "service.cli", "index", "build", str(corpus), "--name", "small", "--shards", "2",
             "--ray", cluster.address, "--ray-workers", "2", "--batch-size", "16", "--quiet",
             "--index-root", str(cluster.head.folder / "root")],
            capture_output=True, text=True, timeout=1200,
            env={**os.environ, **ray_env(), "TMPDIR": str(cluster.head.tmp)})
    finally:
        done.set()
        watcher.join()
    assert proc.returncode == 0, proc.stderr[-3000:]
    builds = {name: [s for s in found if s.startswith("hybrid-shard-build-")] for name, found in seen.items()}
    assert not builds["head"] and sum(len(b) for b in builds.values()) >= 2, seen  # built on the workers
    assert not [s for s in seen["head"] if s.startswith("hybrid-chunk-")], seen  # encoded on the workers
    return IndexRoot(cluster.head.folder / "root").resolve("small")


@pytest.fixture(scope="module")
def plain(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same index built in this process (two shards, no Ray)."""
    root = IndexRoot(tmp_path_factory.mktemp("plain"))
    build_index(corpus, "small", root, BuildOptions(progress=False, batch_size=16, shards=2))
    return root.resolve("small")


def test_the_build_ran_on_the_workers_and_equals_one_process(built: Path, plain: Path) -> None:
    assert [Manifest.read(built / rel).doc_count for rel in Manifest.read(built).shards] == \
        [Manifest.read(plain / rel).doc_count for rel in Manifest.read(plain).shards]
    with Searcher.open(built, verify="full") as a, Searcher.open(plain) as b:
        for retriever in ("bm25", "splade", "dense"):
            for query in QUERIES:
                assert ([(h.id, h.score) for h in a.search(query, k=60, retrievers=[retriever]).hits]
                        == [(h.id, h.score) for h in b.search(query, k=60, retrievers=[retriever]).hits])


class RayServe:
    """``hybrid serve --ray HEAD --replicas 2 --shards-from object-store`` from the head node."""

    def __init__(self, cluster, root: Path) -> None:  # type: ignore[no-untyped-def]
        from tests.support.ray_nodes import ray_env

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (cluster.base / "serve.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--ray", cluster.address, "--replicas", "2",
             "--shards-from", "object-store", "--index-root", str(root), "--port", str(self.port), "--device", "cpu",
             "--max-concurrent", "8", "--max-queued", "8"],  # the 3 clients: the defaults would shed them with 429
            env={**os.environ, **ray_env(), "TMPDIR": str(cluster.head.tmp)}, stdout=self.log, stderr=self.log)
        deadline = time.time() + 900
        while time.time() < deadline:
            assert self.proc.poll() is None, (cluster.base / "serve.log").read_text(errors="replace")[-3000:]
            try:
                if httpx.get(f"{self.url}/v1/ready", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(2)
        raise AssertionError("Ray Serve not ready in time")

    def search(self, query: str, **body: object) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/indexes/small/search", json={"query": query, **body}, timeout=120)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C: serve.shutdown
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def served(cluster, built: Path) -> Iterator[RayServe]:  # type: ignore[no-untyped-def]
    service = RayServe(cluster, cluster.head.folder / "root")
    yield service
    service.stop()


def hits(response: httpx.Response) -> list[tuple[str, float]]:
    assert response.status_code == 200, response.text
    return [(h["id"], h["score"]) for h in response.json()["hits"]]


def test_replicas_fetch_their_shards_and_answer_as_one_process(  # type: ignore[no-untyped-def]
        cluster, served: RayServe, plain: Path) -> None:
    fetched = {n.name: n.seen("small-") for n in [cluster.head, *cluster.workers]}
    assert sum(len(f) for f in fetched.values()) == 4, fetched  # 2 shards x 2 replicas, each with its own copy
    assert any(fetched[n.name] for n in cluster.workers), fetched  # replicas on the workers (one a node a shard)
    with Searcher.open(plain) as one:
        for retriever in ("splade", "dense"):
            for query in QUERIES:
                assert hits(served.search(query, k=60, retrievers=[retriever])) == \
                    [(h.id, h.score) for h in one.search(query, k=60, retrievers=[retriever]).hits]
        local = {h.id for h in one.search(QUERIES[0], k=60, retrievers=["bm25"]).hits}
    assert {i for i, _ in hits(served.search(QUERIES[0], k=60, retrievers=["bm25"]))} == local
    r = httpx.put(f"{served.url}/v1/indexes/small/documents", json={"documents": [{"_id": "x", "text": "wing"}]},
                  timeout=60)
    assert r.status_code == 409 and "copied onto the nodes" in r.json()["error"]["message"]


def test_a_worker_node_lost_under_load_loses_no_search(  # type: ignore[no-untyped-def]
        cluster, served: RayServe) -> None:
    before = {q: hits(served.search(q, k=20)) for q in QUERIES}
    stop = threading.Event()
    answers: list[int] = []

    def client(n: int) -> None:
        with httpx.Client(timeout=120) as session:
            i = n
            while not stop.is_set():
                r = session.post(f"{served.url}/v1/indexes/small/search", json={"query": QUERIES[i % 3], "k": 20})
                answers.append(r.status_code)
                i += 1

    victim = max(cluster.workers, key=lambda n: len(n.seen("small-")))
    assert victim.seen("small-"), "no worker node holds a shard replica"  # its loss must cost replicas
    threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(3)
        served_before = len(answers)
        victim.kill()  # the node's raylet, object store and replicas, at once
        time.sleep(25)  # searches go on meanwhile, on the replicas of the other nodes
        assert len(answers) > served_before
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(answers) > served_before + 10 and set(answers) == {200}, \
        {code: answers.count(code) for code in set(answers)}
    victim.start()  # the node comes back (a new raylet, its own folders); Serve restores 2 replicas a shard
    cluster.wait_for(3)
    deadline = time.time() + 300
    while time.time() < deadline:
        after = {q: hits(served.search(q, k=20)) for q in QUERIES}
        if after == before:
            break
        time.sleep(5)
    assert after == before
