"""Sharded indexes, in one process: a 3-shard build of the small corpus searches exactly like the unsharded
one (same ids, same scores, same order, for BM25 through global statistics too), with filters, PRF and
fusion; it is served over HTTP read-only and survives a restart; bad shard counts are refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from indexes.indexing.builder import BuildError, BuildOptions, build_index
from indexes.storage.layout import IndexRoot
from indexes.storage.manifest import Manifest
from indexes.storage.shards import shard_folder, shard_of
from retrieval.core.types import PrfConfig
from retrieval.search.pipeline import Searcher
from tests.conftest import cranfield_docs, write_jsonl
from tests.test_service import Server

SHARDS = 3
QUERIES = ["what similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft",
           "boundary layer transition at supersonic speeds", "heat transfer to a flat plate"]


def lang(i: int) -> str:
    return ["en", "fr", "de"][i % 3]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small corpus (the ``searcher`` fixture's documents) with a metadata field, in 3 shards."""
    folder = tmp_path_factory.mktemp("sharded")
    rows = cranfield_docs(60)
    for i, row in enumerate(rows):
        row["metadata"] = {"lang": lang(i)}
    corpus = write_jsonl(folder / "corpus.jsonl", rows)
    root = IndexRoot(folder / "root")
    build_index(corpus, "sharded", root, BuildOptions(progress=False, batch_size=16, shards=SHARDS))
    return root.root


@pytest.fixture(scope="module")
def sharded_searcher(sharded: Path):  # type: ignore[no-untyped-def]
    s = Searcher.open(IndexRoot(sharded).resolve("sharded"))
    yield s
    s.close()


def test_documents_go_to_the_shard_their_id_hashes_to(sharded: Path) -> None:
    folder = IndexRoot(sharded).resolve("sharded")
    manifest = Manifest.read(folder)
    assert manifest.shards == [f"shards/{i:03d}" for i in range(SHARDS)]
    counts = []
    for i in range(SHARDS):
        shard = Manifest.read(shard_folder(folder, i))
        assert not shard.shards and set(shard.retrievers) == {"bm25", "splade", "dense"}
        counts.append(shard.doc_count)
        Searcher.open(shard_folder(folder, i)).close()  # each shard is a complete index of its own
    assert sum(counts) == manifest.doc_count == 60 and min(counts) > 0
    assert shard_of("doc-1", SHARDS) == shard_of("doc-1", SHARDS) and {shard_of(str(i), 3) for i in range(50)} == {0, 1, 2}


@pytest.mark.parametrize("retriever", ["bm25", "splade", "dense"])
def test_each_retriever_equals_the_unsharded_index(sharded_searcher, searcher, retriever: str) -> None:  # type: ignore[no-untyped-def]
    for query in QUERIES:
        a = sharded_searcher.search(query, k=60, retrievers=[retriever]).hits
        b = searcher.search(query, k=60, retrievers=[retriever]).hits
        assert [(h.id, h.score) for h in a] == [(h.id, h.score) for h in b]


def test_fusion_prf_filters_pages_and_text_equal_the_unsharded_index(sharded_searcher, searcher) -> None:  # type: ignore[no-untyped-def]
    options = [
        {"k": 10, "explain": True, "include_text": True, "highlight": True},
        {"k": 5, "offset": 5},
        {"k": 10, "prf": {"bm25": PrfConfig("rm3"), "dense": PrfConfig("rocchio"), "splade": PrfConfig("rocchio")}},
    ]
    for query in QUERIES:
        for option in options:
            a, b = sharded_searcher.search(query, **option), searcher.search(query, **option)
            assert [replace(h, metadata=None) for h in a.hits] == [replace(h, metadata=None) for h in b.hits], option
    batch_a = sharded_searcher.batch_search(QUERIES, k=10)
    batch_b = searcher.batch_search(QUERIES, k=10)
    assert [r.hits for r in batch_a] == [r.hits for r in batch_b]


def test_filters_on_shards_keep_the_unfiltered_order(sharded_searcher) -> None:  # type: ignore[no-untyped-def]
    langs = {row["_id"]: lang(i) for i, row in enumerate(cranfield_docs(60))}
    for retriever in ("bm25", "splade", "dense"):
        for value in ("fr", "de"):
            everything = sharded_searcher.search(QUERIES[1], k=60, retrievers=[retriever]).hits
            expected = [(h.id, h.score) for h in everything if langs[h.id] == value][:10]
            got = sharded_searcher.search(QUERIES[1], k=10, retrievers=[retriever], filter={"term": {"lang": value}}).hits
            assert [(h.id, h.score) for h in got] == expected, (retriever, value)


def test_served_over_http_read_only_and_after_a_restart(sharded: Path) -> None:
    for _ in range(2):  # the second server opens the same files again: a restart
        server = Server(sharded)
        try:
            url = f"{server.url}/v1/indexes/sharded"
            info = httpx.get(url, timeout=30).json()
            assert info["documents"] == 60
            r = httpx.post(f"{url}/search", json={"query": QUERIES[0], "k": 5}, timeout=60)
            assert r.status_code == 200 and len(r.json()["hits"]) == 5
            w = httpx.put(f"{url}/documents", timeout=60, json={"documents": [{"_id": "x", "text": "new"}]})
            assert w.status_code == 409 and "sharded" in w.json()["error"]["message"]
        finally:
            server.stop()


def test_bad_shard_counts_are_refused(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", cranfield_docs(2))
    with pytest.raises(BuildError, match="of 3 got no documents; use fewer shards"):
        build_index(corpus, "tiny", IndexRoot(tmp_path / "r"), BuildOptions(progress=False, shards=3))
    with pytest.raises(BuildError, match="at least 1"):
        build_index(corpus, "tiny", IndexRoot(tmp_path / "r"), BuildOptions(progress=False, shards=0))
    assert not (tmp_path / "r" / "tiny").exists()


def test_the_default_fan_out_merges_like_the_dense_override(sharded: Path, searcher) -> None:  # type: ignore[no-untyped-def]
    """``Component.merged_searcher``'s default (each shard searches and encodes, lists merged by score), which new
    kinds inherit, ranks like one index too."""
    from indexes.kinds import get_kind
    from indexes.kinds.base import Component, FanOutSearcher, ViewState
    from indexes.storage.docstore import DocStore

    folder = IndexRoot(sharded).resolve("sharded")
    kind = get_kind("dense")
    shards = [shard_folder(folder, i) for i in range(SHARDS)]
    components = [kind.open(f, "dense", Manifest.read(f).retrievers["dense"], "cpu") for f in shards]
    stores = [DocStore.open(f) for f in shards]
    encoder = searcher.searchers["dense"].encoder
    fan_out = Component.merged_searcher.__func__(type(components[0]), components, encoder, stores,  # type: ignore[attr-defined]
                                                 [ViewState()] * SHARDS, 16)
    try:
        assert isinstance(fan_out, FanOutSearcher)
        for query in QUERIES:
            got = fan_out.search([query], 20, 1).runs[0]
            want = searcher.search(query, k=20, retrievers=["dense"]).hits
            assert [(d.doc_id, d.score) for d in got] == [(h.id, h.score) for h in want]
    finally:
        fan_out.close()
        for store in stores:
            store.close()
