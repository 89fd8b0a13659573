"""The Python client (``service.client``) against the real server: search and batch search keyed by query id, as the
sync and the async client; writes with the bulk helpers' chunking; index management, jobs, keys and scopes, timeouts,
the version check; judgments and the leaderboard. The retry policy's own tests are in tests/unit/test_client_retry.py
(a server that answers 429 on demand is a mock transport's job)."""

from __future__ import annotations

import asyncio
import json
import warnings
from pathlib import Path

import httpx
import pytest

from service.client import (
    ApiKeyError,
    AsyncHybridClient,
    ConflictError,
    ConnectionFailedError,
    HybridClient,
    InvalidRequestError,
    NotFoundError,
    RequestTimeoutError,
    Retry,
    VersionMismatchWarning,
    as_run,
)
from service.schemas import SearchRequest, SearchResponse
from service.version import VERSION
from tests.support import cranfield_docs, write_jsonl
from tests.support.judged import ADMIN_KEY, INDEX, SEARCH_KEY, Judged
from tests.support.server import Server, free_port

QUERY = "boundary layer transition"


def _qids(judged: Judged) -> dict[str, str]:
    return {(row := json.loads(line))["_id"]: row["text"] for line in (judged.dataset / "queries.jsonl").read_text().splitlines()}


def test_search_and_batch_search_keyed_by_query_id(judged: Judged) -> None:
    queries = _qids(judged)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same version: no warning at connect
        client = HybridClient(judged.server.url, api_key=SEARCH_KEY)
    with client:
        assert client.server_version == VERSION
        one = client.search(INDEX, QUERY, k=5, explain=True, highlight=True, include_text=True)
        assert isinstance(one, SearchResponse) and one.retrievers == ["bm25"] and len(one.hits) == 5
        assert one.hits[0].explain["bm25"].rank == 1 and "<em>" in (one.hits[0].highlight or "")
        raw = httpx.post(f"{judged.server.url}/v1/indexes/{INDEX}/search", json={"query": QUERY, "k": 5},
                         headers={"Authorization": f"Bearer {SEARCH_KEY}"}).json()
        assert [(h.id, h.score) for h in one.hits] == [(h["id"], h["score"]) for h in raw["hits"]]
        assert [h.id for h in client.search(INDEX, SearchRequest(query=QUERY, k=5)).hits] == [h.id for h in one.hits]

        results = client.batch_search(INDEX, queries, k=10, chunk_size=2, prf={"bm25": {"method": "rm3"}})
        assert list(results) == list(queries)  # keyed by query id, in order, across three chunks of two
        for qid, text in queries.items():
            alone = client.search(INDEX, text, k=10, prf={"bm25": {"method": "rm3"}})
            assert [h.id for h in results[qid].hits] == [h.id for h in alone.hits]
        run = as_run(results)
        assert run == {q: {h.id: h.score for h in results[q].hits} for q in queries} and len(run["1"]) == 10
        keyed = client.batch_search(INDEX, queries, k=3)
        as_list = client.batch_search(INDEX, list(queries.values()), k=3)  # a list of queries gives a list back
        assert [[h.id for h in r.hits] for r in as_list] == [[h.id for h in keyed[q].hits] for q in queries]


def test_async_client(judged: Judged) -> None:
    queries = _qids(judged)

    async def main() -> tuple[str | None, dict[str, SearchResponse], SearchResponse, list[str]]:
        async with AsyncHybridClient(judged.server.url, api_key=SEARCH_KEY) as client:
            batch = await client.batch_search(INDEX, queries, k=4, chunk_size=3)
            single, listed = await asyncio.gather(client.search(INDEX, QUERY, k=4), client.list_indexes())
            return client.server_version, batch, single, [i.name for i in listed]

    version, batch, single, names = asyncio.run(main())
    assert version == VERSION and INDEX in names
    with HybridClient(judged.server.url, api_key=SEARCH_KEY) as sync:
        expected = sync.batch_search(INDEX, queries, k=4)
        assert {q: [h.id for h in r.hits] for q, r in batch.items()} == {q: [h.id for h in r.hits] for q, r in expected.items()}
        assert [h.id for h in single.hits] == [h.id for h in sync.search(INDEX, QUERY, k=4).hits]


def test_writes_bulk_helpers_and_index_management(judged: Judged, tmp_path: Path) -> None:
    docs = cranfield_docs(23)
    with HybridClient(judged.server.url, api_key=ADMIN_KEY, timeout=60) as client:
        created = client.create_index("scratch", retrievers=["bm25"])
        assert created.name == "scratch" and created.documents == 0
        assert "scratch" in [i.name for i in client.list_indexes()]
        with pytest.raises(ConflictError, match="already exists"):
            client.create_index("scratch", retrievers=["bm25"])

        written = client.bulk_upsert("scratch", ({"_id": d["_id"], "title": d["title"], "text": d["text"],
                                                  "metadata": {"n": i}} for i, d in enumerate(docs)), chunk_size=5)
        assert len(written.responses) == 5 and written.upserted == 23 and written.documents == 23  # 5+5+5+5+3
        assert [r.seq for r in written.responses] == sorted(r.seq for r in written.responses)
        assert client.get_index("scratch").documents == 23 and client.get_index("scratch").fields == {"n": "number"}
        with pytest.raises(NotFoundError, match="was not built from a BEIR folder"):
            client.queries("scratch")
        hits = client.search("scratch", docs[3]["title"], k=3, filter={"range": {"n": {"lte": 5}}}).hits
        assert hits and hits[0].id == docs[3]["_id"]

        gone = client.bulk_delete("scratch", [d["_id"] for d in docs[:7]] + ["no-such-id"], chunk_size=3)
        assert len(gone.responses) == 3 and gone.deleted == 7 and gone.missing == ["no-such-id"]
        assert client.get_index("scratch").documents == 16
        job = client.upsert("scratch", [{"_id": "late", "text": "quokka zyzzyva"}], wait=False)
        assert client.wait_for_job(job.id, timeout=60).state == "succeeded"
        assert [h.id for h in client.search("scratch", "zyzzyva", k=3).hits] == ["late"]
        snap = client.snapshot("scratch")
        assert snap.documents == 17 and snap.snapshot.startswith("scratch@")
        assert client.reload_index("scratch").documents == 17

        corpus = write_jsonl(judged.dataset.parent / "built.jsonl", docs[:9])
        build = client.create_index("built", corpus=str(corpus), retrievers=["bm25"])
        done = client.wait_for_job(build.id, timeout=120, poll=0.2)
        assert done.state == "succeeded" and done.result["documents"] == 9
        assert build.id in [j.id for j in client.list_jobs()] and client.get_job(build.id).state == "succeeded"
        for name in ("scratch", "built"):
            client.delete_index(name)
        assert {"scratch", "built"}.isdisjoint(i.name for i in client.list_indexes())
        with pytest.raises(NotFoundError):
            client.get_index("scratch")


def test_keys_scopes_errors_and_timeouts(judged: Judged) -> None:
    url = judged.server.url
    with HybridClient(url, api_key=SEARCH_KEY) as reader:
        assert reader.ready().ready and reader.health().version == VERSION
        with pytest.raises(ApiKeyError, match="needs an admin key") as denied:
            reader.upsert(INDEX, [{"_id": "x", "text": "y"}])
        assert denied.value.status == 403
        with pytest.raises(ApiKeyError):
            reader.list_jobs()
        with pytest.raises(InvalidRequestError, match="k must be >= 1, got 0"):  # the server's own message, checked here
            reader.search(INDEX, QUERY, k=0)
        with pytest.raises(InvalidRequestError, match="not available in index"):  # checked by the server
            reader.search(INDEX, QUERY, retrievers=["dense"])
        with pytest.raises(NotFoundError, match="no index named"):
            reader.search("nope", QUERY)
    with HybridClient(url, check_version=False) as anonymous, pytest.raises(ApiKeyError, match="missing API key"):
        anonymous.search(INDEX, QUERY)
    slow = [f"{QUERY} {i}" for i in range(40)]  # 40 RM3 searches: far longer than a millisecond
    rm3 = {"prf": {"bm25": {"method": "rm3"}}, "k": 40}
    with HybridClient(url, api_key=SEARCH_KEY, timeout=0.001, check_version=False) as hasty:
        with pytest.raises(RequestTimeoutError):
            hasty.batch_search(INDEX, slow, **rm3)
        assert hasty.search(INDEX, QUERY, timeout=30).hits  # a call's own timeout overrides the client's
    with HybridClient(url, api_key=SEARCH_KEY) as client, pytest.raises(RequestTimeoutError):
        client.batch_search(INDEX, slow, timeout=0.001, **rm3)

    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.warns(VersionMismatchWarning, match="could not check"):
        client = HybridClient(closed, retry=Retry(attempts=2, backoff=0.01))
    with client, pytest.raises(ConnectionFailedError):
        client.search(INDEX, QUERY)


def test_version_mismatch_warns(judged: Judged, monkeypatch: pytest.MonkeyPatch) -> None:
    import service.client._base as base

    monkeypatch.setattr(base, "VERSION", "99.1.0")
    with pytest.warns(VersionMismatchWarning, match="client version 99.1.0 and server version"):
        HybridClient(judged.server.url, api_key=SEARCH_KEY).close()


def test_judgments_and_leaderboard(judged: Judged) -> None:
    with HybridClient(judged.server.url, api_key=SEARCH_KEY) as client:
        listed = client.queries(INDEX)
        assert listed.dataset == "tiny" and [q.id for q in listed.queries] == ["1", "2", "3", "4"]  # judged only
        assert [q.relevant for q in listed.queries] == [2, 1, 1, 1]  # query 4's second judgment has grade 0
        assert client.qrels(INDEX, "4") == {"4": {cranfield_docs(40)[4]["_id"]: 1, cranfield_docs(40)[5]["_id"]: 0}}
        assert set(client.qrels(INDEX)) == {"1", "2", "3", "4"}
        with pytest.raises(NotFoundError, match="no judgments for query"):
            client.qrels(INDEX, "99")

        board = client.leaderboard()
        results = json.loads((judged.reports / "results.json").read_text())
        assert [(r.method, r.scores) for r in board.results] == [(r["method"], r["scores"]) for r in results["results"]]
        assert all(r.per_query for r in board.results) and board.primary == "ndcg@10"
        found = client.compare_methods("tiny", "bm25+rm3", "bm25")
        per_query = [json.loads((judged.reports / "tiny" / f"{m}.metrics.json").read_text())["ndcg@10"]
                     for m in ("bm25_rm3", "bm25")]
        assert {q.id: (q.a, q.b) for q in found.queries} == {q: (per_query[0][q], per_query[1][q]) for q in per_query[0]}
        assert found.wins == sum(per_query[0][q] > per_query[1][q] + 1e-9 for q in per_query[0])
        assert found.wins + found.losses + found.ties == 4 and 0 < found.p_value <= 1
        bm25 = next(r for r in board.results if r.method == "bm25+rm3")
        assert found.p_value == pytest.approx(bm25.p_vs_base)  # the leaderboard's own test, same pairs
        for bad in ({"dataset": "..", "a": "bm25", "b": "bm25"}, {"dataset": "tiny", "a": "../../x", "b": "bm25"}):
            with pytest.raises(NotFoundError, match="the leaderboard has no method"):
                client.compare_methods(**bad)
        with pytest.raises(NotFoundError, match="no per-query 'p@3'"):
            client.compare_methods("tiny", "bm25", "bm25+rm3", metric="p@3")


def test_client_search_equals_the_library(server: Server, searcher) -> None:  # type: ignore[no-untyped-def]
    """Over the session's three-retriever index: fusion, weights, explain, through the client as through the engine."""
    with HybridClient(server.url) as client:
        for options in ({}, {"retrievers": ["splade", "dense"], "fusion": {"method": "weighted",
                                                                           "weights": {"splade": 0.7, "dense": 0.3}}}):
            got = client.search("small", "heat transfer in laminar boundary layers", k=7, explain=True, **options)
            want = searcher.search("heat transfer in laminar boundary layers", k=7, explain=True, **options)
            assert [h.id for h in got.hits] == [h.id for h in want.hits]
            assert [h.score for h in got.hits] == pytest.approx([h.score for h in want.hits], rel=1e-5)
            assert got.hits[0].contributions == pytest.approx(want.hits[0].contributions, rel=1e-5)
