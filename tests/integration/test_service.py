"""The real server over real HTTP (``hybrid serve`` in a subprocess on a free loopback port) on a real index: the
session's ``server`` (no keys) and ``keyed_server`` (search keys, an admin key, a CORS origin), from conftest."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.server import Server

QUERY = "heat transfer in laminar boundary layers"


def test_health_ready_indexes(server: Server) -> None:
    from service.version import VERSION

    assert httpx.get(f"{server.url}/v1/health").json() == {"status": "ok", "version": VERSION}
    ready = httpx.get(f"{server.url}/v1/ready").json()
    assert ready["ready"] is True and ready["indexes"] == ["small"]
    listed = httpx.get(f"{server.url}/v1/indexes").json()["indexes"]
    assert [i["name"] for i in listed] == ["small"]
    info = httpx.get(f"{server.url}/v1/indexes/small").json()
    assert info["documents"] == 60
    assert {r["name"] for r in info["retrievers"]} == {"bm25", "splade", "dense"}
    assert all(r["size_bytes"] > 0 for r in info["retrievers"])


def test_search_equals_library(server: Server, searcher) -> None:  # type: ignore[no-untyped-def]
    from retrieval.core.types import PrfConfig
    from retrieval.search.fusion import Adaptive, FusionConfig

    cases = [
        ({}, {}),
        ({"retrievers": ["splade", "dense"], "fusion": {"method": "weighted", "weights": {"splade": 0.7, "dense": 0.3},
                                                       "normalization": "zscore"}},
         {"retrievers": ["splade", "dense"], "fusion": FusionConfig("weighted", 60, {"splade": 0.7, "dense": 0.3}, "zscore")}),
        ({"retrievers": ["bm25"]}, {"retrievers": ["bm25"]}),
        ({"prf": {"bm25": {"method": "rm3", "fb_docs": 5}, "dense": {"method": "average"}}},
         {"prf": {"bm25": PrfConfig("rm3", fb_docs=5), "dense": PrfConfig("average")}}),
        ({"fusion": {"method": "weighted", "adaptive": {"coefficients": {"agreement": 2.0, "margin": -1.0}}}},
         {"fusion": FusionConfig("weighted", adaptive=Adaptive({"agreement": 2.0, "margin": -1.0}))}),
        ({"query_mode": {"splade": "tokens", "dense": "onnx"}}, {"query_modes": {"splade": "tokens", "dense": "onnx"}}),
        ({"query_mode": {"splade": "onnx-int8", "dense": "onnx-int8"}},
         {"query_modes": {"splade": "onnx-int8", "dense": "onnx-int8"}}),
    ]
    for body, kwargs in cases:
        response = httpx.post(f"{server.url}/v1/indexes/small/search",
                              json={"query": QUERY, "k": 7, "explain": True, "include_text": True, **body}, timeout=60)
        assert response.status_code == 200, response.text
        data = response.json()
        expected = searcher.search(QUERY, k=7, explain=True, **kwargs)
        assert [h["id"] for h in data["hits"]] == [h.id for h in expected.hits]
        assert [h["score"] for h in data["hits"]] == pytest.approx([h.score for h in expected.hits], rel=1e-5)
        assert data["hits"][0]["text"] and set(data["hits"][0]["explain"]) == set(expected.retrievers)
        assert data["took_ms"] > 0


def test_batch_search(server: Server, searcher) -> None:  # type: ignore[no-untyped-def]
    queries = [QUERY, "supersonic flutter", "similarity laws for models"]
    data = httpx.post(f"{server.url}/v1/indexes/small/search/batch", json={"queries": queries, "k": 4}, timeout=60).json()
    assert len(data["results"]) == 3
    for query, result in zip(queries, data["results"]):
        assert [h["id"] for h in result["hits"]] == [h.id for h in searcher.search(query, k=4).hits]


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/v1/indexes/nope/search", {"query": "x"}, 404, "no index named 'nope'"),
        ("/v1/indexes/small/search", {"query": ""}, 422, "query"),
        ("/v1/indexes/small/search", {"query": "   "}, 422, "empty"),
        ("/v1/indexes/small/search", {"query": "x", "k": 0}, 422, "k"),
        ("/v1/indexes/small/search", {"query": "x", "k": 1001}, 422, "k"),
        ("/v1/indexes/small/search", {"query": "x", "k": -1}, 422, "k"),
        ("/v1/indexes/small/search", {"query": "x", "k": 10**9}, 422, "k"),
        ("/v1/indexes/small/search", {"query": "x" * 100_000}, 413, "limit is 10000"),
        ("/v1/indexes/small/search", {"query": "\u0000\u0007 \t\n"}, 422, "empty"),
        ("/v1/indexes/small/search", {"query": "x", "retrievers": []}, 422, "retrievers"),
        ("/v1/indexes/small/search", {"query": "x", "depth": 0}, 422, "depth"),
        ("/v1/indexes/small/search", {"query": 5}, 422, "query"),
        ("/v1/indexes/..%2F..%2Fetc/search", {"query": "x"}, 404, "no route POST"),
        ("/v1/indexes/small/search", {"query": "x", "retrievers": ["colbert"]}, 422, "retriever 'colbert' is not available in index 'small'; choose from"),
        ("/v1/indexes/small/search", {"query": "x", "fusion": {"method": "weighted", "weights": {"bm25": -1}}}, 422, "weights"),
        ("/v1/indexes/small/search", {"query": "x", "fusion": {"method": "weighted", "weights": {"bm25": 0, "dense": 0}}}, 422,
         "greater than 0"),
        ("/v1/indexes/small/search", {"query": "x" * 10_001}, 413, "limit is 10000"),
        ("/v1/indexes/small/search", {"query": "x", "unknown": 1}, 422, "unknown"),
        ("/v1/indexes/small/search/batch", {"queries": ["x"] * 1001}, 413, "limit is 1000"),
        ("/v1/indexes/small/search/batch", {"queries": ["x"] * 10_001}, 413, "limit is 1000"),
        ("/v1/indexes/small/search/batch", {"queries": []}, 422, "queries"),
        ("/v1/indexes/small/search", {"query": "x", "prf": {"splade": {"method": "rm3"}}}, 422,
         "retriever 'splade' (splade) has no PRF method 'rm3'"),
        ("/v1/indexes/small/search", {"query": "x", "prf": {"dense": {"method": "rm3"}}}, 422,
         "it offers: average, rocchio"),
        ("/v1/indexes/small/search", {"query": "x", "prf": {"dense": {"method": "average", "fb_terms": 5}}}, 422,
         "takes fb_docs, not fb_terms"),
        ("/v1/indexes/small/search", {"query": "x", "retrievers": ["dense"], "prf": {"bm25": {"method": "rm3"}}}, 422,
         "does not search"),
        ("/v1/indexes/small/search", {"query": "x", "prf": {"bm25": {"method": "rm3", "fb_docs": 0}}}, 422, "fb_docs"),
        ("/v1/indexes/small/search", {"query": "x", "query_mode": {"splade": "fast"}}, 422,
         "no query mode 'fast'; it offers: torch, onnx, onnx-int8, tokens"),
        ("/v1/indexes/small/search", {"query": "x", "query_mode": {"bm25": "tokens"}}, 422, "offers: none"),
        ("/v1/indexes/small/search", {"query": "x", "retrievers": ["bm25"], "query_mode": {"dense": "onnx"}}, 422,
         "does not search"),
        ("/v1/indexes/small/search", {"query": "x", "query_mode": {"dense": "ONNX!"}}, 422, "query_mode"),
        ("/v1/indexes/small/search", {"query": "x", "offset": -1}, 422, "offset"),
        ("/v1/indexes/small/search", {"query": "x", "offset": 10_001}, 422, "offset"),
        ("/v1/indexes/small/search", {"query": "x", "fusion": {"method": "weighted", "bounds": {"dense": [1, 0]}}}, 422,
         "low < high"),
        ("/v1/indexes/small/search", {"query": "x", "fusion": {"bounds": {"dense": [0, 1]}}}, 422,
         "set method to weighted"),
        ("/v1/indexes/small/search", {"query": "x", "fusion": {"method": "weighted", "bounds": {"dense": [0]}}}, 422,
         "bounds"),
        ("/v1/indexes/small/search", {"query": "x", "fusion": {"method": "rrf", "adaptive": {"coefficients": {"nqc": 1}}}},
         422, "weighted"),
        ("/v1/indexes/small/search", {"query": "x", "fusion": {"method": "weighted",
                                                               "adaptive": {"coefficients": {"clarity": 1}}}}, 422,
         "coefficients"),
    ],
)
def test_errors(server: Server, path: str, body: dict, status: int, fragment: str) -> None:
    response = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert fragment in message and "Traceback" not in message
    assert not re.search(r"/(tmp|root|home|work|usr)/", message), message  # no file paths leak


def test_nan_and_malformed_json(server: Server) -> None:
    url = f"{server.url}/v1/indexes/small/search"
    headers = {"Content-Type": "application/json"}
    r = httpx.post(url, content='{"query": "x", "fusion": {"weights": {"bm25": NaN}}}', headers=headers)
    assert r.status_code == 422 and "finite" in r.json()["error"]["message"]
    r = httpx.post(url, content='{"query": "x", "fusion": {"method": "weighted", "weights": {"dense": Infinity}}}',
                   headers=headers)
    assert r.status_code == 422 and "finite" in r.json()["error"]["message"]
    r = httpx.post(url, content='{"query": ', headers=headers)
    assert r.status_code == 422
    r = httpx.post(url, content=b"\xff\xfe not json", headers=headers)
    assert r.status_code in (400, 422) and r.json()["error"]["message"]


def test_lucene_syntax_is_plain_text(server: Server) -> None:
    for query in ['wing AND "flow" (heat*', "title:wing~2 OR -boundary", "a:b\\ [x TO y] ^3 !", "*", "?", "AND OR NOT",
                  '"unbalanced', "(((", "\\", "/regex/", "{x TO y}", "x^", "&& || !", "flow\u0000\u0007"]:
        r = httpx.post(f"{server.url}/v1/indexes/small/search", json={"query": query, "k": 3}, timeout=60)
        assert r.status_code == 200, r.text


def test_fifty_concurrent_requests(server: Server, searcher) -> None:  # type: ignore[no-untyped-def]
    queries = [f"{QUERY} {i % 5}" for i in range(50)]
    expected = {q: [h.id for h in searcher.search(q, k=5).hits] for q in set(queries)}

    def call(q: str) -> tuple[str, int, list[str]]:
        r = httpx.post(f"{server.url}/v1/indexes/small/search", json={"query": q, "k": 5}, timeout=120)
        return q, r.status_code, [h["id"] for h in r.json().get("hits", [])]

    def counter(name: str) -> float:
        text = httpx.get(f"{server.url}/metrics").text
        return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))

    batches_before, queries_before = counter("hybrid_micro_batches"), counter("hybrid_micro_batched_queries")
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(call, queries))
    assert all(status == 200 for _, status, _ in results)
    assert all(ids == expected[q] for q, _, ids in results)
    batches = counter("hybrid_micro_batches") - batches_before
    assert counter("hybrid_micro_batched_queries") - queries_before == 50
    assert batches < 50  # concurrent single queries shared encoder calls


def test_metrics_and_openapi(server: Server) -> None:
    httpx.post(f"{server.url}/v1/indexes/small/search", json={"query": QUERY}, timeout=60)
    text = httpx.get(f"{server.url}/metrics").text
    assert 'hybrid_requests_total{method="POST",route="/v1/indexes/{name}/search",status="200"}' in text
    assert 'hybrid_index_documents{index="small"} 60.0' in text
    assert "hybrid_search_stage_seconds_bucket" in text
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v1/indexes/{name}/search" in spec["paths"]
    assert httpx.get(f"{server.url}/docs").status_code == 200


def test_api_keys(keyed_server: tuple[Server, Path]) -> None:
    server, _ = keyed_server
    url = f"{server.url}/v1/indexes/small/search"
    assert httpx.get(f"{server.url}/v1/health").status_code == 200
    assert httpx.post(url, json={"query": QUERY}).status_code == 401
    assert httpx.post(url, json={"query": QUERY}, headers={"Authorization": "Bearer wrong"}).status_code == 403
    for key in ("k1-secret", "k2-secret"):
        assert httpx.post(url, json={"query": QUERY}, headers={"Authorization": f"Bearer {key}"}, timeout=60).status_code == 200
    assert httpx.get(f"{server.url}/v1/indexes").status_code == 401


def test_scopes_cors_and_reload(keyed_server: tuple[Server, Path]) -> None:
    server, _ = keyed_server  # "copy": a copy of the session index that only this test reloads
    search = {"Authorization": "Bearer search-key"}
    admin = {"Authorization": "Bearer admin-key"}
    url = f"{server.url}/v1/indexes/copy"
    assert httpx.post(f"{url}/search", json={"query": QUERY}, headers=admin, timeout=60).status_code == 200
    r = httpx.post(f"{url}/reload", headers=search)
    assert r.status_code == 403 and "admin key" in r.json()["error"]["message"]
    assert httpx.post(f"{url}/reload").status_code == 401
    r = httpx.post(f"{url}/reload", headers=admin, timeout=120)
    assert r.status_code == 200 and r.json()["documents"] == 60
    assert httpx.post(f"{server.url}/v1/indexes/..%2Fx/reload", headers=admin).status_code == 404
    preflight = httpx.options(f"{url}/search", headers={"Origin": "https://app.example",
                                                        "Access-Control-Request-Method": "POST"})
    assert preflight.headers.get("access-control-allow-origin") == "https://app.example"
    other = httpx.options(f"{url}/search", headers={"Origin": "https://evil.example",
                                                    "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in other.headers


def test_cors_off_by_default(server: Server) -> None:
    r = httpx.options(f"{server.url}/v1/indexes/small/search",
                      headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers


def test_short_soak(server: Server) -> None:
    from eval.bench.soak import soak

    report = soak(server.url, "small", server.proc.pid, clients=8, seconds=20)
    assert report["errors"] == 0 and report["requests"] > 40
    assert report["rss_growth_after_warmup"] < 0.10, report["rss_kib"]


def test_pages_and_explained_contributions_over_http(server: Server) -> None:
    url = f"{server.url}/v1/indexes/small/search"
    for fusion in ({"method": "rrf"}, {"method": "weighted", "normalization": "zscore"},
                   # every retriever weighted: without "retrievers", the weighted ones are the ones searched
                   {"method": "weighted", "bounds": {"dense": [0, 1]}, "weights": {"bm25": 0.3, "splade": 1, "dense": 1}}):
        whole = httpx.post(url, json={"query": QUERY, "k": 12, "fusion": fusion, "explain": True}, timeout=60).json()
        page = httpx.post(url, json={"query": QUERY, "k": 6, "offset": 6, "fusion": fusion, "explain": True},
                          timeout=60).json()
        assert page["hits"] == whole["hits"][6:12] and [h["rank"] for h in page["hits"]] == list(range(7, 13))
        for hit in whole["hits"]:
            assert sum(hit["contributions"].values()) == pytest.approx(hit["score"], abs=1e-9)
            for name, source in hit["explain"].items():
                if source is not None:
                    assert source["contribution"] == pytest.approx(hit["contributions"][name], abs=1e-12)
                    assert ("normalized" in source) == (fusion["method"] == "weighted")
        floor = whole["hits"][5]["score"]
        kept = httpx.post(url, json={"query": QUERY, "k": 12, "fusion": fusion, "min_score": floor}, timeout=60).json()
        assert [h["id"] for h in kept["hits"]] == [h["id"] for h in whole["hits"] if h["score"] >= floor]


def test_client_vectors_over_http(server: Server, searcher) -> None:  # type: ignore[no-untyped-def]
    url = f"{server.url}/v1/indexes/small/search"
    dense = searcher.searchers["dense"].encode_queries([QUERY])[0].tolist()
    weights = searcher.searchers["splade"].encoder._encode([QUERY], query=True, batch_size=1)[0]
    by_text = httpx.post(url, json={"query": QUERY, "k": 8, "retrievers": ["splade", "dense"]}, timeout=60).json()
    by_vectors = httpx.post(url, json={"k": 8, "retrievers": ["splade", "dense"], "query_vector": {"dense": dense},
                                       "query_sparse": {"splade": weights}}, timeout=60)
    assert by_vectors.status_code == 200, by_vectors.text
    assert [(h["id"], h["score"]) for h in by_vectors.json()["hits"]] == [(h["id"], h["score"]) for h in by_text["hits"]]
    for body, fragment in [({"k": 3, "query_vector": {"dense": dense}}, "query 0 is empty"),
                           ({"query": "x", "query_vector": {"dense": [0.5, 0.5]}}, "has 2 dimensions; the index has 384"),
                           ({"query": "x", "query_sparse": {"splade": {"zzzqqq!": 1.0}}}, "not in the model's vocabulary"),
                           ({"query": "x", "query_vector": {"bm25": [1.0]}}, "searches query text only"),
                           ({"query": "x", "query_vector": {"dense": []}}, "query_vector"),
                           ({"query": "x", "query_sparse": {"splade": {"wing": -2}}}, "query_sparse")]:
        response = httpx.post(url, json=body, timeout=60)
        assert response.status_code == 422, (body, response.text)
        assert fragment in response.json()["error"]["message"]
