"""Live index management over real HTTP: upserts, deletes, create, build jobs, snapshots, delete,
admin scope, bad input, and an acknowledged write surviving kill -9 of the server."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest

from indexes.storage.docstore.layout import IndexRoot
from tests.support import cranfield_docs, write_jsonl
from tests.support.server import Server

ADMIN = {"Authorization": "Bearer admin-key"}
SEARCH = {"Authorization": "Bearer search-key"}
ENV = {"HYBRID_API_KEYS": "search-key", "HYBRID_ADMIN_KEYS": "admin-key"}
RETRIEVERS = ("bm25", "splade", "dense")


def found_by(url: str, index: str, query: str, doc_id: str) -> dict[str, bool]:
    """For each retriever alone: is ``doc_id`` among its hits for ``query``?"""
    out = {}
    for retriever in RETRIEVERS:
        r = httpx.post(f"{url}/v1/indexes/{index}/search", headers=SEARCH, timeout=60,
                       json={"query": query, "k": 100, "retrievers": [retriever]})
        assert r.status_code == 200, r.text
        out[retriever] = doc_id in {h["id"] for h in r.json()["hits"]}
    return out


@pytest.fixture()
def live_server(index_root: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(IndexRoot(index_root).resolve("small"), root / "news")
    server = Server(root, env=ENV)
    yield server, root
    server.stop()


def test_upsert_delete_create_build_snapshot_and_drop(live_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, root = live_server
    url = server.url
    doc = {"_id": "fresh-1", "title": "Ablation of reentry heat shields",
           "text": "Charring ablators protect reentry vehicles from convective heating at hypersonic speed.",
           "metadata": {"source": "test"}}
    r = httpx.put(f"{url}/v1/indexes/news/documents", headers=ADMIN, json={"documents": [doc]}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["upserted"], body["seq"], body["documents"]) == (1, 1, 61)
    acked = time.perf_counter()
    assert found_by(url, "news", "ablation heat shield reentry", "fresh-1") == dict.fromkeys(RETRIEVERS, True)
    assert time.perf_counter() - acked < 1.0 * len(RETRIEVERS)  # searchable at once, by every retriever
    hit = httpx.post(f"{url}/v1/indexes/news/search", headers=SEARCH, timeout=60,
                     json={"query": "charring ablators", "k": 1, "include_text": True, "explain": True}).json()["hits"][0]
    assert hit["id"] == "fresh-1" and hit["metadata"] == {"source": "test"}
    assert all(hit["explain"][n] is not None for n in RETRIEVERS)

    # Replace by id, then delete: gone from every retriever and from fusion.
    doc2 = dict(doc, text="Transpiration cooling of porous walls in hypersonic flow.")
    assert httpx.put(f"{url}/v1/indexes/news/documents", headers=ADMIN, json={"documents": [doc2]}, timeout=120).json()["documents"] == 61
    text = httpx.post(f"{url}/v1/indexes/news/search", headers=SEARCH, timeout=60,
                      json={"query": "transpiration cooling porous", "k": 1, "include_text": True}).json()["hits"][0]
    assert (text["id"], text["text"]) == ("fresh-1", doc2["text"])
    r = httpx.request("DELETE", f"{url}/v1/indexes/news/documents", headers=ADMIN, json={"ids": ["fresh-1", "nope"]}, timeout=60)
    assert r.status_code == 200 and r.json()["deleted"] == 1 and r.json()["missing"] == ["nope"]
    assert found_by(url, "news", "transpiration cooling porous", "fresh-1") == dict.fromkeys(RETRIEVERS, False)
    assert httpx.get(f"{url}/v1/indexes/news", headers=SEARCH).json()["documents"] == 60

    # Bad writes: a clear 4xx each, nothing applied.
    cases = [
        (SEARCH, {"documents": [doc]}, 403, "admin key"),
        ({}, {"documents": [doc]}, 401, "missing API key"),
        (ADMIN, {"documents": [dict(doc, _id=f"d{i}") for i in range(1001)]}, 413, "limit is 1000"),
        (ADMIN, {"documents": [dict(doc, title="", text="  ")]}, 422, "no title and no text"),
        (ADMIN, {"documents": [doc, doc]}, 422, "appears twice"),
        (ADMIN, {"documents": [dict(doc, _id="")]}, 422, "_id"),
        (ADMIN, {"documents": []}, 422, "documents"),
        (ADMIN, {"documents": [dict(doc, extra=1)]}, 422, "extra"),
    ]
    for headers, payload, status, fragment in cases:
        r = httpx.put(f"{url}/v1/indexes/news/documents", headers=headers, json=payload, timeout=60)
        assert r.status_code == status and fragment in r.json()["error"]["message"], (status, r.text)
    assert httpx.put(f"{url}/v1/indexes/nope/documents", headers=ADMIN, json={"documents": [doc]}).status_code == 404
    assert httpx.get(f"{url}/v1/indexes/news", headers=SEARCH).json()["seq"] == 3

    # An empty index, filled through the API; asynchronous upsert as a job.
    r = httpx.post(f"{url}/v1/indexes", headers=ADMIN, json={"name": "blank", "retrievers": ["bm25", "dense"]}, timeout=120)
    assert r.status_code == 201 and r.json()["documents"] == 0, r.text
    assert httpx.post(f"{url}/v1/indexes", headers=ADMIN, json={"name": "blank"}).status_code == 409
    r = httpx.put(f"{url}/v1/indexes/blank/documents", headers=ADMIN, json={"documents": [doc], "wait": False}, timeout=60)
    assert r.status_code == 202
    job = wait_for_job(url, r.json()["id"])
    assert job["state"] == "succeeded" and job["result"]["documents"] == 1
    hits = httpx.post(f"{url}/v1/indexes/blank/search", headers=SEARCH, json={"query": "ablators"}, timeout=60).json()["hits"]
    assert [h["id"] for h in hits] == ["fresh-1"]

    # A build from a server-side corpus, as a job with progress.
    corpus = write_jsonl(tmp_path / "c.jsonl", cranfield_docs(12))
    r = httpx.post(f"{url}/v1/indexes", headers=ADMIN, json={"name": "built", "corpus": str(corpus)}, timeout=60)
    assert r.status_code == 202, r.text
    job = wait_for_job(url, r.json()["id"])
    assert job["state"] == "succeeded" and job["result"]["documents"] == 12 and job["docs_per_second"] > 0
    assert httpx.get(f"{url}/v1/indexes/built", headers=SEARCH).json()["documents"] == 12
    r = httpx.post(f"{url}/v1/indexes", headers=ADMIN, json={"name": "x", "corpus": "/no/such/corpus.jsonl"})
    assert r.status_code == 422 and "<path>" not in r.text and "/no/such" not in r.json()["error"]["message"]
    assert httpx.get(f"{url}/v1/jobs/{'0' * 32}", headers=ADMIN).status_code == 404
    assert len(httpx.get(f"{url}/v1/jobs", headers=ADMIN).json()["jobs"]) == 2

    # Snapshot: a point-in-time copy in the layout `hybrid serve --index-root` loads.
    r = httpx.post(f"{url}/v1/indexes/news/snapshot", headers=ADMIN, timeout=120)
    assert r.status_code == 201, r.text
    snap = r.json()
    assert snap["documents"] == 60 and (root / snap["path"] / "news" / "manifest.json").is_file()

    # Drop an index: files gone, 404 afterwards.
    assert httpx.delete(f"{url}/v1/indexes/built", headers=SEARCH).status_code == 403
    assert httpx.delete(f"{url}/v1/indexes/built", headers=ADMIN, timeout=60).status_code == 204
    assert httpx.get(f"{url}/v1/indexes/built", headers=SEARCH).status_code == 404
    assert not (root / "built").exists()
    assert httpx.delete(f"{url}/v1/indexes/built", headers=ADMIN).status_code == 404


def wait_for_job(url: str, job_id: str, timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=ADMIN).json()
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.25)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def test_acknowledged_write_survives_kill_9(live_server) -> None:  # type: ignore[no-untyped-def]
    server, root = live_server
    docs = [{"_id": f"k{i}", "title": "Shock tube", "text": f"shock tube experiment number {i} on real gas effects"}
            for i in range(5)]
    r = httpx.put(f"{server.url}/v1/indexes/news/documents", headers=ADMIN, json={"documents": docs}, timeout=120)
    assert r.status_code == 200
    first = cranfield_docs(1)[0]["_id"]
    assert httpx.request("DELETE", f"{server.url}/v1/indexes/news/documents", headers=ADMIN,
                         json={"ids": [first]}, timeout=60).json()["deleted"] == 1
    server.kill()  # no checkpoint: only the write-ahead log has these writes
    restarted = Server(root, env=ENV)
    try:
        assert httpx.get(f"{restarted.url}/v1/indexes/news", headers=SEARCH).json()["documents"] == 64
        for doc in docs[:2]:
            assert found_by(restarted.url, "news", doc["text"], doc["_id"]) == dict.fromkeys(RETRIEVERS, True)
        hits = httpx.post(f"{restarted.url}/v1/indexes/news/search", headers=SEARCH, timeout=60,
                          json={"query": "flow", "k": 100, "depth": 100}).json()["hits"]
        assert first not in {h["id"] for h in hits}
    finally:
        restarted.stop()
