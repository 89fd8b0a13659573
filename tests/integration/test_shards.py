"""Sharded indexes, in one process: a 3-shard build of the small corpus searches exactly like the unsharded
one (same ids, same scores, same order, for BM25 through global statistics too), with filters, PRF and
fusion; it is served over HTTP read-only and survives a restart; bad shard counts are refused."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from indexes.indexing.builder import BuildError, BuildOptions, build_index
from indexes.indexing.sharded import ShardedLiveIndex, open_index
from indexes.storage.docstore.corpus import Document
from indexes.storage.docstore.layout import IndexRoot
from indexes.storage.docstore.manifest import Manifest
from indexes.storage.docstore.shards import shard_folder, shard_of
from retrieval.core.options import OpenOptions
from retrieval.core.types import PrfConfig
from retrieval.search.pipeline import Searcher
from tests.support import cranfield_docs, write_jsonl
from tests.support.server import Server

SHARDS = 3
QUERIES = ["what similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft",
           "boundary layer transition at supersonic speeds", "heat transfer to a flat plate"]


def lang(i: int) -> str:
    return ["en", "fr", "de"][i % 3]


def build_with_lang(folder: Path, name: str, shards: int, vectors: Path) -> IndexRoot:
    """The small corpus (the ``searcher`` fixture's documents) with a metadata field, built in ``shards`` shards from
    the session's vectors of its documents (a sharded build encodes once, then indexes each shard from the vectors:
    given them, it skips only the encoding)."""
    rows = cranfield_docs(60)
    for i, row in enumerate(rows):
        row["metadata"] = {"lang": lang(i)}
    root = IndexRoot(folder / "root")
    build_index(write_jsonl(folder / "corpus.jsonl", rows), name, root,
                BuildOptions(progress=False, batch_size=16, shards=shards), vectors=vectors)
    return root


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory, small_vectors: Path) -> Path:
    return build_with_lang(tmp_path_factory.mktemp("sharded"), "sharded", SHARDS, small_vectors).root


@pytest.fixture(scope="module")
def sharded_searcher(sharded: Path):  # type: ignore[no-untyped-def]
    s = Searcher.open(IndexRoot(sharded).resolve("sharded"))
    yield s
    s.close()


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("retriever", ["bm25", "splade", "dense"])
def test_each_retriever_equals_the_unsharded_index(sharded_searcher, searcher, retriever: str) -> None:  # type: ignore[no-untyped-def]
    for query in QUERIES:
        a = sharded_searcher.search(query, k=60, retrievers=[retriever]).hits
        b = searcher.search(query, k=60, retrievers=[retriever]).hits
        assert [(h.id, h.score) for h in a] == [(h.id, h.score) for h in b]


@pytest.mark.slow
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


@pytest.mark.slow
def test_filters_on_shards_keep_the_unfiltered_order(sharded_searcher) -> None:  # type: ignore[no-untyped-def]
    langs = {row["_id"]: lang(i) for i, row in enumerate(cranfield_docs(60))}
    for retriever in ("bm25", "splade", "dense"):
        for value in ("fr", "de"):
            everything = sharded_searcher.search(QUERIES[1], k=60, retrievers=[retriever]).hits
            expected = [(h.id, h.score) for h in everything if langs[h.id] == value][:10]
            got = sharded_searcher.search(QUERIES[1], k=10, retrievers=[retriever], filter={"term": {"lang": value}}).hits
            assert [(h.id, h.score) for h in got] == expected, (retriever, value)


NEW_DOCS = [Document(f"new-{i}", "Shock waves", f"Shock wave boundary layer interaction, case {i}.", {"lang": lang(i)})
            for i in range(6)]


@pytest.fixture(scope="module")
def unsharded_meta(tmp_path_factory: pytest.TempPathFactory, small_vectors: Path) -> Path:
    """The sharded fixture's documents in one folder, to compare live writes against."""
    return build_with_lang(tmp_path_factory.mktemp("unsharded"), "one", 1, small_vectors).resolve("one")


@pytest.mark.slow
def test_live_writes_reach_the_owning_shard_and_rank_as_unsharded(sharded: Path, unsharded_meta: Path,
                                                                  tmp_path: Path) -> None:
    shutil.copytree(IndexRoot(sharded).resolve("sharded"), tmp_path / "s")
    shutil.copytree(unsharded_meta, tmp_path / "u")
    many, one = open_index(tmp_path / "s"), open_index(tmp_path / "u")
    try:
        assert isinstance(many, ShardedLiveIndex)
        query = "shock wave boundary layer interaction"

        def same(retrievers: tuple[str, ...]) -> None:
            with many.view() as a, one.view() as b:
                for retriever in retrievers:
                    for where in (None, {"term": {"lang": "fr"}}):
                        got = a.search(query, k=20, retrievers=[retriever], filter=where).hits
                        want = b.search(query, k=20, retrievers=[retriever], filter=where).hits
                        assert [(h.id, h.score) for h in got] == [(h.id, h.score) for h in want], (retriever, where)

        for index in (many, one):
            index.upsert(NEW_DOCS)
        same(("bm25", "splade", "dense"))
        for index in (many, one):
            assert index.delete(["new-1", "nope", cranfield_docs(1)[0]["_id"]]).missing == ["nope"]
        # BM25 statistics count a deleted document until Lucene merges its segment away, and a segment whose
        # documents are all deleted goes at once: after deletes they depend on the segments, sharded or not.
        same(("splade", "dense"))
        with many.view() as a:
            hits = a.search(query, k=20, retrievers=["bm25"]).hits
            assert "new-1" not in {h.id for h in hits} and {f"new-{i}" for i in (0, 2, 3, 4, 5)} <= {h.id for h in hits}
        assert many.doc_count == one.doc_count == 60 + 6 - 2
        assert sum(s.doc_count for s in many.shards) == 64 and sum(s.seq > 0 for s in many.shards) >= 2
        bad = [Document("x1", "t", "text", {"lang": 5})]
        assert many.upsert(bad).upserted == 1  # lang is a keyword field: numbers fit
    finally:
        many.close()
        one.close()

    reopened = open_index(tmp_path / "s")  # checkpointed at close: the writes are in the shards' files
    try:
        assert reopened.doc_count == 65
        with reopened.view() as searcher:
            assert {h.id for h in searcher.search("shock wave boundary layer", k=10, retrievers=["bm25"]).hits} >= {
                f"new-{i}" for i in (0, 2, 3, 4, 5)}
    finally:
        reopened.close()
    assert Searcher.open(tmp_path / "s").manifest.shards  # the read-only path verifies each shard's own files


@pytest.mark.slow
def test_sharded_service_writes_survives_kill_9_and_snapshots(sharded: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(IndexRoot(sharded).resolve("sharded"), root / "news")
    server = Server(root)
    url = f"{server.url}/v1/indexes/news"
    try:
        docs = [{"_id": f"w{i}", "title": "Ablation", "text": f"Charring ablators on reentry vehicles, test {i}.",
                 "metadata": {"lang": "fr"}} for i in range(5)]
        r = httpx.put(f"{url}/documents", json={"documents": docs}, timeout=120)
        assert r.status_code == 200 and r.json()["upserted"] == 5 and r.json()["documents"] == 65, r.text
        server.kill()  # acknowledged: in the shards' write-ahead logs, not yet checkpointed
        server = Server(root)
        url = f"{server.url}/v1/indexes/news"
        hits = httpx.post(f"{url}/search", timeout=60, json={"query": "charring ablators reentry", "k": 5,
                                                              "filter": {"term": {"lang": "fr"}}}).json()["hits"]
        assert {h["id"] for h in hits} == {f"w{i}" for i in range(5)}
        r = httpx.request("DELETE", f"{url}/documents", json={"ids": ["w0", "w1"]}, timeout=60)
        assert r.status_code == 200 and r.json()["deleted"] == 2
        assert httpx.get(url, timeout=30).json()["documents"] == 63
        snap = httpx.post(f"{url}/snapshot", timeout=60)
        assert snap.status_code == 201 and snap.json()["documents"] == 63, snap.text
    finally:
        server.stop()
    copy = open_index(IndexRoot(root / snap.json()["path"]).resolve("news"))  # a snapshot is an index root
    try:
        assert isinstance(copy, ShardedLiveIndex) and copy.doc_count == 63
        with copy.view() as searcher:
            hits = {h.id for h in searcher.search("charring ablators reentry", k=10, filter={"term": {"lang": "fr"}}).hits}
            assert {"w2", "w3", "w4"} <= hits and not {"w0", "w1"} & hits  # w0 and w1 were deleted
    finally:
        copy.close()


def test_bad_shard_counts_are_refused(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", cranfield_docs(2))
    with pytest.raises(BuildError, match="of 3 got no documents; use fewer shards"):
        build_index(corpus, "tiny", IndexRoot(tmp_path / "r"), BuildOptions(progress=False, shards=3))
    with pytest.raises(BuildError, match="at least 1"):
        build_index(corpus, "tiny", IndexRoot(tmp_path / "r"), BuildOptions(progress=False, shards=0))
    assert not (tmp_path / "r" / "tiny").exists()


@pytest.mark.slow
def test_the_default_fan_out_merges_like_the_dense_override(sharded: Path, searcher) -> None:  # type: ignore[no-untyped-def]
    """``Component.merged_searcher``'s default (each shard searches and encodes, lists merged by score), which new
    kinds inherit, ranks like one index too."""
    from indexes.kinds import get_kind
    from indexes.kinds.base import Component, FanOutSearcher, ViewState
    from indexes.storage.docstore.store import DocStore

    folder = IndexRoot(sharded).resolve("sharded")
    kind = get_kind("dense")
    shards = [shard_folder(folder, i) for i in range(SHARDS)]
    components = [kind.open(f, "dense", Manifest.read(f).retrievers["dense"], OpenOptions()) for f in shards]
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
