"""Metadata filters on real indexes: a batch build whose corpus carries metadata (every retriever, fused
and alone, equals its unfiltered ranking with the non-matching documents taken out), live upserts with
metadata over HTTP (string, number, date, list; types recorded, wrong types and unknown fields 422), a
reopen after a crash, and the FAISS path for selective filters on a graph index."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from indexes.indexing.builder import BuildOptions, build_index
from indexes.indexing.live import LiveIndex
from indexes.storage.docstore.corpus import Document
from indexes.storage.docstore.layout import IndexRoot
from retrieval.search.pipeline import Searcher, SearchError
from tests.support import cranfield_docs, write_jsonl
from tests.support.server import Server

DOCS = 60
QUERY = "pressure distribution on a wing in supersonic flow"
RETRIEVERS = ("bm25", "splade", "dense")


def with_metadata(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Metadata of every kind on the small corpus: keyword, number, date, list, nested boolean, and a rare field."""
    for i, row in enumerate(rows):
        row["metadata"] = {"lang": ["en", "fr", "de"][i % 3], "year": 1950 + i % 10,
                           "published": f"19{50 + i % 10}-{1 + i % 12:02d}-15",
                           "tags": [f"t{i % 4}", f"u{i % 5}"], "review": {"done": i % 2 == 0}}
        if i % 20 == 0:
            row["metadata"]["rare"] = "yes"
    return {row["_id"]: row["metadata"] for row in rows}


@pytest.fixture(scope="module")
def meta(tmp_path_factory: pytest.TempPathFactory,
         small_vectors: Path) -> Iterator[tuple[Searcher, dict[str, dict[str, Any]]]]:
    """The small corpus with metadata, built with the session's vectors of its documents (their text is the same)."""
    rows = cranfield_docs(DOCS)
    metadata = with_metadata(rows)
    folder = tmp_path_factory.mktemp("meta")
    corpus = write_jsonl(folder / "corpus.jsonl", rows)
    build_index(corpus, "meta", IndexRoot(folder / "root"), BuildOptions(progress=False, batch_size=16),
                vectors=small_vectors)
    searcher = Searcher.open(IndexRoot(folder / "root").resolve("meta"))
    yield searcher, metadata
    searcher.close()


CASES: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
    ({"term": {"lang": "fr"}}, lambda m: m["lang"] == "fr"),
    ({"terms": {"tags": ["t1", "u3"]}}, lambda m: "t1" in m["tags"] or "u3" in m["tags"]),
    ({"range": {"year": {"gt": 1952, "lte": 1955}}}, lambda m: 1952 < m["year"] <= 1955),
    ({"range": {"published": {"gte": "1953-06-01", "lt": "1957-01-01"}}},
     lambda m: "1953-06-01" <= m["published"] < "1957-01-01"),
    ({"term": {"review.done": True}}, lambda m: m["review"]["done"]),
    ({"exists": {"field": "rare"}}, lambda m: "rare" in m),
    ({"and": [{"term": {"year": 1951}}, {"not": {"term": {"lang": "en"}}}]},
     lambda m: m["year"] == 1951 and m["lang"] != "en"),
    ({"or": [{"term": {"lang": "de"}}, {"range": {"year": {"lt": 1952}}}]},
     lambda m: m["lang"] == "de" or m["year"] < 1952),
]


@pytest.mark.slow
def test_field_types_are_recorded_at_build(meta) -> None:  # type: ignore[no-untyped-def]
    searcher, _ = meta
    assert searcher.manifest.fields == {"lang": "keyword", "year": "number", "published": "date", "tags": "keyword",
                                        "review.done": "boolean", "rare": "keyword"}


@pytest.mark.slow
def test_metadata_changes_no_unfiltered_score(meta, searcher) -> None:  # type: ignore[no-untyped-def]
    """The same 60 documents with metadata (Lucene written by our writer) and without it (IndexCollection): every
    retriever ranks and scores alike."""
    with_meta, _ = meta
    for name in RETRIEVERS:
        a = with_meta.search(QUERY, k=30, retrievers=[name]).hits
        b = searcher.search(QUERY, k=30, retrievers=[name]).hits
        assert [(h.id, round(h.score, 4)) for h in a] == [(h.id, round(h.score, 4)) for h in b], name


@pytest.mark.slow
@pytest.mark.parametrize("where, wanted", CASES, ids=[str(c[0])[:48] for c in CASES])
def test_each_retriever_ranks_only_matches_before_top_k(meta, where, wanted) -> None:  # type: ignore[no-untyped-def]
    """A filtered top-k equals the unfiltered ranking of every document with the non-matching ones taken out:
    the filter runs inside the retriever, before top-k, and changes no score."""
    searcher, metadata = meta
    for name in RETRIEVERS:
        everything = searcher.search(QUERY, k=DOCS, retrievers=[name]).hits
        expected = [h for h in everything if wanted(metadata[h.id])][:10]
        got = searcher.search(QUERY, k=10, retrievers=[name], filter=where).hits
        assert [h.id for h in got] == [h.id for h in expected], name
        assert [h.score for h in got] == pytest.approx([h.score for h in expected], abs=1e-5), name
    fused = searcher.search(QUERY, k=10, filter=where).hits
    assert fused and all(wanted(metadata[h.id]) for h in fused)


@pytest.mark.slow
def test_splade_in_memory_filters_as_lucene_does(meta) -> None:  # type: ignore[no-untyped-def]
    """The in-memory SPLADE search under every filter case: Lucene's FILTER clause's hits and scores, exactly."""
    from retrieval.core.options import OpenOptions

    searcher, _ = meta
    assert searcher.searchers["splade"].matrix is not None
    lucene = Searcher.open(searcher.folder, OpenOptions(splade_search="lucene", verify="off"), retrievers=["splade"])
    try:
        for where, _ in CASES:
            for k in (3, 10, 40):
                got = searcher.search(QUERY, k=k, retrievers=["splade"], filter=where).hits
                want = lucene.search(QUERY, k=k, retrievers=["splade"], filter=where).hits
                assert [(h.id, h.score) for h in got] == [(h.id, h.score) for h in want], where
    finally:
        lucene.close()


@pytest.mark.slow
def test_qdrant_edge_ranks_alike_under_the_same_filters(meta) -> None:  # type: ignore[no-untyped-def]
    """The Qdrant Edge comparison's filtered rows: Qdrant gets the fields as indexed payload and the filter as a
    Filter; SPLADE, dense and RRF under it return the same top 10 as ours."""
    from eval.bench.qdrant_edge import compare

    searcher, _ = meta
    where = [{"term": {"lang": "fr"}}, {"and": [{"range": {"year": {"lt": 1956}}}, {"not": {"term": {"lang": "de"}}}]}]
    report = compare(searcher, [QUERY, "heat transfer in a boundary layer", "flutter of wings"], rounds=1, warmup=0,
                     filters=where)
    filtered = {name: r for name, r in report["methods"].items() if " | " in name}
    assert len(filtered) == 6 and report["settings"]["points"] == DOCS
    for name, row in filtered.items():
        assert row["overlap_at_k_ties"] >= 0.99, name


@pytest.mark.slow
def test_a_selective_filter_still_fills_k(meta) -> None:  # type: ignore[no-untyped-def]
    searcher, metadata = meta
    rare = {i for i, m in metadata.items() if "rare" in m}
    hits = searcher.search("anything at all", k=len(rare), retrievers=["dense"], filter={"term": {"rare": "yes"}}).hits
    assert {h.id for h in hits} == rare
    paged = searcher.search(QUERY, k=2, offset=1, retrievers=["dense"], filter={"term": {"rare": "yes"}}).hits
    assert [h.rank for h in paged] == [2, 3]


@pytest.mark.slow
@pytest.mark.parametrize("where, message", [
    ({"term": {"nope": 1}}, "unknown field 'nope'"),
    ({"range": {"lang": {"gte": 1}}}, "'lang' is a keyword field; range needs a number or date field"),
    ({"term": {"year": "1999"}}, "'year' is a number field"),
    ({"range": {"published": {"gte": 1999}}}, "'published' is a date field"),
    ({"term": {"review.done": "yes"}}, "'review.done' is a boolean field"),
    ({"match": {"lang": "en"}}, "unknown operator 'match'"),
    ({"and": []}, "non-empty list"),
    ({"range": {"year": {"gte": 1, "gt": 2}}}, "two lower or two upper bounds"),
])
def test_bad_filters_name_what_to_fix(meta, where, message) -> None:  # type: ignore[no-untyped-def]
    searcher, _ = meta
    with pytest.raises(SearchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        searcher.search(QUERY, filter=where)


@pytest.mark.slow
def test_bm25_prf_refuses_a_filter(meta) -> None:  # type: ignore[no-untyped-def]
    from retrieval.core.types import PrfConfig

    searcher, _ = meta
    with pytest.raises(SearchError, match="cannot apply a metadata filter"):
        searcher.search(QUERY, retrievers=["bm25"], prf={"bm25": PrfConfig("rm3")}, filter={"term": {"lang": "en"}})


def test_live_writes_are_filterable_and_survive_a_crash(index_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "live"
    shutil.copytree(IndexRoot(index_root).resolve("small"), folder)
    live = LiveIndex.open(folder)
    docs = [Document(f"n{i}", "Shock waves", f"Shock wave boundary layer interaction number {i}.",
                     {"lab": "ames" if i % 2 else "langley", "year": 2000 + i, "day": f"2024-01-0{i + 1}"})
            for i in range(4)]
    live.upsert(docs)
    live.delete(["n3"])
    live.close(checkpoint=False)  # as after kill -9: only the write-ahead log has the writes

    reopened = LiveIndex.open(folder)
    try:
        assert reopened.manifest.fields == {"lab": "keyword", "year": "number", "day": "date"}
        with reopened.view() as searcher:
            for name in RETRIEVERS:
                hits = searcher.search("shock wave boundary layer", k=10, retrievers=[name],
                                       filter={"term": {"lab": "ames"}}).hits
                assert [h.id for h in hits] == ["n1"], name  # n3 was deleted
                hits = searcher.search("shock wave boundary layer", k=10, retrievers=[name],
                                       filter={"range": {"day": {"gte": "2024-01-02"}}}).hits
                assert sorted(h.id for h in hits) == ["n1", "n2"], name
    finally:
        reopened.close()


ADMIN = {"Authorization": "Bearer admin-key"}
SEARCH = {"Authorization": "Bearer search-key"}


def test_filters_over_http_on_upserted_documents(keyed_server: tuple[Server, Path]) -> None:
    server, _ = keyed_server  # "news": a copy of the session index that only this test writes to
    url = f"{server.url}/v1/indexes/news"
    docs = [{"_id": f"m{i}", "title": "Heat transfer", "text": f"Heat transfer to a cooled wall, case {i}.",
             "metadata": {"source": ["nasa", "rae"][i % 2], "year": 1990 + i, "published": f"1990-0{i + 1}-01",
                          "tags": ["heat", f"case{i}"]}} for i in range(6)]
    r = httpx.put(f"{url}/documents", headers=ADMIN, json={"documents": docs}, timeout=120)
    assert r.status_code == 200, r.text
    fields = httpx.get(url, headers=SEARCH, timeout=30).json()["fields"]
    assert fields == {"source": "keyword", "year": "number", "published": "date", "tags": "keyword"}

    def ids(where: dict[str, Any], **extra: Any) -> set[str]:
        r = httpx.post(f"{url}/search", headers=SEARCH, timeout=60,
                       json={"query": "heat transfer cooled wall", "k": 20, "filter": where, **extra})
        assert r.status_code == 200, r.text
        return {h["id"] for h in r.json()["hits"]}

    assert ids({"term": {"source": "rae"}}) == {"m1", "m3", "m5"}
    assert ids({"range": {"year": {"gte": 1994}}}, retrievers=["dense"]) == {"m4", "m5"}
    assert ids({"range": {"published": {"lt": "1990-03-01"}}}, retrievers=["splade"]) == {"m0", "m1"}
    assert ids({"terms": {"tags": ["case2", "case4"]}}, retrievers=["bm25"]) == {"m2", "m4"}
    batch = httpx.post(f"{url}/search/batch", headers=SEARCH, timeout=60,
                       json={"queries": ["heat transfer", "cooled wall"], "filter": {"term": {"source": "nasa"}}})
    assert batch.status_code == 200 and all(h["id"] in {"m0", "m2", "m4"}
                                            for res in batch.json()["results"] for h in res["hits"])

    bad = httpx.put(f"{url}/documents", headers=ADMIN, timeout=60, json={"documents": [
        {"_id": "m9", "text": "Wall heating.", "metadata": {"year": "nineteen ninety"}}]})
    assert bad.status_code == 422 and "'year' is a number field" in bad.json()["error"]["message"]
    for where, message in (({"term": {"colour": "red"}}, "unknown field 'colour'"),
                           ({"range": {"source": {"gte": "a"}}}, "'source' is a keyword field")):
        r = httpx.post(f"{url}/search", headers=SEARCH, timeout=60, json={"query": "heat", "filter": where})
        assert r.status_code == 422 and message in r.json()["error"]["message"], r.text


def test_graph_index_under_a_selective_filter_falls_back_to_an_exact_scan(tmp_path: Path) -> None:
    """HNSW with a selector can miss matches of a 1% filter: few matches are scanned exactly, and a graph search
    that comes back short is refilled, so k hits come back whenever k documents match."""
    from indexes.storage.faiss import backend as faiss_backend
    from indexes.storage.faiss.backend import FaissIndex

    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(4000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    faiss_backend.save(faiss_backend.build(vectors, "HNSW16"), tmp_path)
    index = FaissIndex(tmp_path, ef_search=16)
    allowed = np.zeros(len(vectors), dtype=bool)
    allowed[rng.choice(len(vectors), 40, replace=False)] = True
    queries = vectors[:5] + 0.1
    exact = np.argsort(-(queries @ vectors[allowed].T), axis=1)[:, :10]
    expected = np.flatnonzero(allowed)[exact]
    _, docnos = index.search_allowed(queries, 10, allowed)  # few matches: straight to the exact scan
    assert (docnos == expected).all()
    # Through the graph with a selector (approximate), refilled by the scan where the graph found too few.
    _, docnos = index.search_allowed(queries, 10, allowed, exact_limit=0)
    assert (docnos >= 0).all() and allowed[docnos].all()
    assert (docnos[:, 0] == expected[:, 0]).mean() >= 0.6
