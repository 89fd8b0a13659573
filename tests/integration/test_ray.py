"""Scale-out on a local Ray cluster (2 CPUs, started once for this module): a 3-shard build through Ray Data and
Ray tasks equals the in-process build; the REST API served by Ray Serve answers like one process (SPLADE and
dense hit for hit and score for score, BM25 with per-shard statistics), takes upserts and deletes, survives a
restart, and answers every request again once a killed shard replica is back."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from indexes.indexing.builder import BuildOptions, build_index
from indexes.storage.docstore.layout import IndexRoot
from indexes.storage.docstore.manifest import Manifest
from retrieval.core.settings import Settings
from retrieval.search.pipeline import Searcher
from tests.support import cranfield_docs, write_jsonl
from tests.support.cli import assert_one_line_error, hybrid
from tests.support.server import free_port

ray = pytest.importorskip("ray")
# A local Ray cluster, Ray Data encoder actors, Ray Serve replicas; this process becomes a Ray driver, so the
# module runs after every other test (conftest).
pytestmark = [pytest.mark.slow, pytest.mark.ray_driver]

QUERIES = ["boundary layer transition at supersonic speeds", "heat transfer to a flat plate",
           "what similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft"]
BATCH = 4  # 60 documents in chunks of 32: two chunks, one per encoder actor


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """Ray on this machine with 2 CPUs."""
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    from ray import serve

    serve.shutdown()  # the replicas' processes go now
    # Not ray.shutdown(): after it, the JVM started since in this process died of SIGSEGV at the next Lucene call
    # of a later test (seen here, every time; the JVM handles SIGSEGV itself, and Ray's shutdown resets signal
    # handling). The driver's local cluster stops when the test process exits.


@pytest.fixture(scope="module")
def crash_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder where a file "shard-N" makes the first Ray worker that builds shard N die once it has written the
    shard. The fault is the test's own: the shard task ``build_shards_on_ray`` looks up when it runs is replaced by
    a closure, which cloudpickle ships to the workers by value (a module-level function would travel by reference
    and be imported there unpatched); the closure calls the real task."""
    from indexes.indexing import ray_build

    crash = tmp_path_factory.mktemp("crash")
    folder = str(crash)
    build_shard_task = ray_build._build_shard_task

    def crashing_build_shard_task(job, options):  # type: ignore[no-untyped-def]
        armed = Path(folder) / f"shard-{int(job.folder.name)}"
        if armed.exists():
            armed.unlink()
            build_shard_task(job, options)  # a shard half-written (and fully), then the worker dies
            os._exit(1)
        return build_shard_task(job, options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ray_build, "_build_shard_task", crashing_build_shard_task)
        yield crash


@pytest.fixture(scope="module")
def built(cluster: None, crash_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> IndexRoot:
    folder = tmp_path_factory.mktemp("raybuild")
    corpus = write_jsonl(folder / "corpus.jsonl", cranfield_docs(60))
    root = IndexRoot(folder / "root")
    build_index(corpus, "plain", root, BuildOptions(progress=False, batch_size=BATCH))
    (crash_dir / "shard-1").touch()  # shard 1's first worker dies after writing: Ray retries it
    manifest = build_index(corpus, "onray", root, BuildOptions(progress=False, batch_size=BATCH, shards=3, ray="local",
                                                               ray_workers=2))
    assert not (crash_dir / "shard-1").exists(), "the crash hook did not fire"
    assert manifest.shards == ["shards/000", "shards/001", "shards/002"] and manifest.doc_count == 60
    return root


@pytest.fixture(scope="module")
def plain(built: IndexRoot) -> Iterator[Searcher]:
    """The in-process build, opened once for every comparison."""
    s = Searcher.open(built.resolve("plain"))
    yield s
    s.close()


def test_ray_build_equals_the_in_process_build(built: IndexRoot, plain: Searcher) -> None:
    folder = built.resolve("onray")
    counts = [Manifest.read(folder / rel).doc_count for rel in Manifest.read(folder).shards]
    assert sum(counts) == 60 and min(counts) > 0
    a, b = plain, Searcher.open(folder)
    try:
        for retriever in ("bm25", "splade", "dense"):
            for query in QUERIES:
                # BM25 too: in one process the shards are searched under one MultiReader (global statistics).
                assert ([(h.id, h.score) for h in b.search(query, k=60, retrievers=[retriever]).hits]
                        == [(h.id, h.score) for h in a.search(query, k=60, retrievers=[retriever]).hits])
    finally:
        b.close()


PORT: list[int] = []  # Serve's HTTP proxy keeps the port it first started on, across applications


class RayService:
    def __init__(self, root: IndexRoot, replicas: int = 1) -> None:
        from service.ray_serve import serve_on_ray

        PORT[:] = PORT or [free_port()]
        self.port = PORT[0]
        settings = Settings(index_root=root.root, host="127.0.0.1", port=self.port, device="cpu")
        serve_on_ray(settings, "local", replicas=replicas, blocking=False, indexes=["onray"])
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)

    def search(self, index: str, query: str, **body: object) -> httpx.Response:
        return self.client.post(f"/v1/indexes/{index}/search", json={"query": query, **body})

    def stop(self) -> None:
        from ray import serve

        serve.delete("hybrid")
        self.client.close()


@pytest.fixture(scope="module")
def served(built: IndexRoot) -> Iterator[RayService]:
    service = RayService(built)
    yield service
    service.stop()


def local_hits(plain: Searcher, query: str, retriever: str) -> list[tuple[str, float]]:
    return [(h.id, h.score) for h in plain.search(query, k=60, retrievers=[retriever]).hits]


@pytest.mark.parametrize("retriever", ["splade", "dense"])
def test_served_shards_equal_one_process(served: RayService, plain: Searcher, retriever: str) -> None:
    for query in QUERIES:
        body = served.search("onray", query, k=60, retrievers=[retriever]).json()
        assert [(h["id"], h["score"]) for h in body["hits"]] == local_hits(plain, query, retriever)


def test_served_bm25_uses_per_shard_statistics(served: RayService, plain: Searcher) -> None:
    """Remote shards score BM25 with their own statistics (README "Scale-out"): the same documents match, the
    scores differ."""
    query = QUERIES[0]
    remote = [(h["id"], h["score"]) for h in served.search("onray", query, k=60, retrievers=["bm25"]).json()["hits"]]
    local = local_hits(plain, query, "bm25")
    assert {i for i, _ in remote} == {i for i, _ in local}
    assert dict(remote) != dict(local)


def test_served_api_is_the_same_api(served: RayService) -> None:
    info = served.client.get("/v1/indexes/onray").json()
    assert info["documents"] == 60 and {r["name"] for r in info["retrievers"]} == {"bm25", "splade", "dense"}
    body = served.search("onray", QUERIES[1], k=5, include_text=True, explain=True, highlight=True).json()
    assert len(body["hits"]) == 5 and body["hits"][0]["text"] and "<em>" in body["hits"][0]["highlight"]
    assert served.search("onray", QUERIES[1], retrievers=["nope"]).status_code == 422
    assert served.search("onray", "x", filter={"term": {"missing": "a"}}).status_code == 422


def test_upsert_delete_and_restart(served: RayService, built: IndexRoot) -> None:
    docs = [{"_id": "ray-new-1", "title": "hypersonic panel flutter", "text": "panel flutter at hypersonic speeds"},
            {"_id": "ray-new-2", "title": "cryogenic propellant tanks", "text": "sloshing in cryogenic tanks"}]
    r = served.client.put("/v1/indexes/onray/documents", json={"documents": docs})
    assert r.status_code == 200 and r.json()["documents"] == 62
    assert served.search("onray", "hypersonic panel flutter", k=1).json()["hits"][0]["id"] == "ray-new-1"
    r = served.client.request("DELETE", "/v1/indexes/onray/documents", json={"ids": ["ray-new-1", "never-there"]})
    assert r.status_code == 200 and r.json()["deleted"] == 1 and r.json()["missing"] == ["never-there"]
    ids = [h["id"] for h in served.search("onray", "hypersonic panel flutter", k=60).json()["hits"]]
    assert "ray-new-1" not in ids
    served.stop()  # the application goes; each shard's write-ahead log and checkpoint stay
    again = RayService(built)
    try:
        assert again.client.get("/v1/indexes/onray").json()["documents"] == 61
        hits = again.search("onray", "cryogenic propellant sloshing", k=1).json()["hits"]
        assert hits[0]["id"] == "ray-new-2"
    finally:
        served.client = again.client  # the module fixture's stop() deletes this one


def test_a_killed_shard_replica_comes_back(served: RayService, built: IndexRoot) -> None:
    """Two read-only replicas per shard; one is killed while queries run. Ray Serve replaces it; afterwards
    every request is answered. Requests sent to the dead replica before the router learns of its death fail."""
    from ray import serve

    served.stop()
    service = RayService(built, replicas=2)
    served.client = service.client
    failures: list[int] = []
    answered = [0]
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                status = service.search("onray", QUERIES[0], k=10).status_code
            except httpx.TransportError:
                status = 0
            if status == 200:
                answered[0] += 1
            else:
                failures.append(status)

    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(2)
    victim = next(a for a in ray.util.list_named_actors(all_namespaces=True)
                  if "onray-shard-000" in a["name"] and a["name"].startswith("SERVE_REPLICA"))
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
    killed_at = time.time()
    deadline = killed_at + 120
    while time.time() < deadline:  # back: a new replica in the victim's place, and the deployment healthy
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "onray-shard-000" in a["name"]
                 and a["name"].startswith("SERVE_REPLICA")]
        status = serve.status().applications["hybrid"].deployments["onray-shard-000"]
        running = sum(n for state, n in status.replica_states.items() if str(getattr(state, "value", state)) == "RUNNING")
        if victim["name"] not in names and len(names) == 2 and running == 2 and str(status.status).endswith("HEALTHY"):
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the killed replica did not come back")
    back_after = time.time() - killed_at
    time.sleep(1)
    stop.set()
    thread.join()
    print(f"\nreplica kill: back after {back_after:.1f} s; {answered[0]} answered, {len(failures)} failed "
          f"({sorted(set(failures))})")
    assert answered[0] > 0
    for query in QUERIES:  # once the replica is back, every request is answered
        for _ in range(5):
            assert service.search("onray", query, k=10).status_code == 200
    assert service.client.put("/v1/indexes/onray/documents", json={"documents": [
        {"_id": "x", "title": "t", "text": "t"}]}).status_code == 409  # several replicas: read-only


def test_an_unreachable_cluster_is_one_line(tmp_path: Path) -> None:
    # In processes of their own: a process is one Ray driver, and this one is already (the cluster fixture).
    corpus = write_jsonl(tmp_path / "corpus.jsonl", cranfield_docs(5))
    root = tmp_path / "root"
    proc = hybrid("index", "build", str(corpus), "--name", "x", "--shards", "2", "--ray", "127.0.0.1:1", "--quiet",
                  root=root, timeout=120)
    assert_one_line_error(proc, "cannot reach the Ray cluster at 127.0.0.1:1")
    assert not IndexRoot(root).path("x").exists()
    assert_one_line_error(hybrid("serve", "--ray", "not-an-address", root=root, timeout=120), "is not HOST:PORT")
