"""Unicode-hostile text (lone surrogates, NUL, every category) at every place a string reaches the JVM: searches on
both Lucene paths (Lucene searched directly, and Anserini's own searcher, which runs PRF) and the in-memory SPLADE
matrix, live upserts and deletes, metadata filters, the REST API and the CLI (issue 35, item 0).

Every answer is a result or a user error (HybridError: 422 / exit 2); never a traceback, a 500, or a write that
is acknowledged and then not found."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexes.indexing.builder import BuildOptions, build_index
from indexes.indexing.live import LiveIndex
from indexes.storage.docstore.corpus import Document
from indexes.storage.docstore.layout import IndexRoot
from retrieval.core.errors import HybridError
from retrieval.core.java_text import UnsafeTextError, checked_key, safe_text
from retrieval.search.pipeline import Searcher
from tests.support import cranfield_docs, write_jsonl
from tests.support.cli import assert_one_line_error, hybrid, run_cli
from tests.support.server import Server

# Every code point category, surrogates (Cs) and controls (Cc) included; and the characters that broke things.
HOSTILE = st.text(st.one_of(st.characters(exclude_categories=()), st.sampled_from("\ud800\udfff\ud83d\x00\x07\t\n")),
                  max_size=24)
LONE = '{"query": "wing \\ud800 flutter"}'  # the issue's request, byte for byte


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real index: BM25 and SPLADE (Lucene impacts and the in-memory matrix), with keyword metadata."""
    docs = cranfield_docs(30)
    for i, doc in enumerate(docs):
        doc["metadata"] = {"tag": "odd" if i % 2 else "even", "year": 1950 + i}
    folder = tmp_path_factory.mktemp("java-text")
    corpus = write_jsonl(folder / "corpus.jsonl", docs)
    build_index(corpus, "small", IndexRoot(folder / "root"),
                BuildOptions(retrievers=("bm25", "splade"), progress=False, batch_size=16))
    return folder / "root"


@pytest.fixture(scope="module", params=["lucene", "matrix"])
def searcher(root: Path, request: pytest.FixtureRequest) -> Iterator[Searcher]:
    with Searcher.open(IndexRoot(root).resolve("small"), splade_search=request.param) as s:
        yield s


def test_the_boundary_functions() -> None:
    assert safe_text("wing \ud800 flutter\x00") == "wing \ufffd flutter "
    assert safe_text("\ud83d\ude00\t\n") == "\U0001F600\t\n"  # a pair written as two code points is its character
    assert safe_text("plain") == "plain"
    for bad in ("a\ud800", "a\x00", "a\tb"):
        with pytest.raises(UnsafeTextError, match="holds"):
            checked_key(bad)
    with pytest.raises(UnsafeTextError, match="lone surrogate"):
        Document("ok", "t", "x", {"tag": "a\udfff"})
    assert Document("d", "t\ud800", "x\x00").text == "x "


@pytest.mark.slow  # a property test over dozens of hostile strings (half a minute)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(query=HOSTILE, tag=HOSTILE)
def test_searches_take_any_text(searcher: Searcher, query: str, tag: str) -> None:
    """Both Lucene paths (BM25 direct, BM25 PRF in Anserini, SPLADE's impacts) and the matrix."""
    for options in ({"retrievers": ["bm25", "splade"]}, {"retrievers": ["bm25"], "prf": {"bm25": {"method": "rm3"}}},
                    {"retrievers": ["bm25", "splade"], "filter": {"term": {"tag": tag}}, "highlight": True,
                     "include_text": True}):
        try:
            result = searcher.search(query, k=5, **options)
        except HybridError:  # an empty query, an unsafe filter value: a user error with a message
            continue
        assert all(isinstance(h.id, str) for h in result.hits)
        json.dumps([h.highlight for h in result.hits]).encode("utf-8")  # what a response will hold encodes


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(doc_id=HOSTILE, title=HOSTILE, text=HOSTILE, value=HOSTILE)
def test_upserts_take_any_text_or_refuse_it(live: LiveIndex, doc_id: str, title: str, text: str, value: str) -> None:
    try:
        doc = Document(doc_id, title, text + " boundary layer", {"tag": value})
        live.upsert([doc])
    except HybridError:
        return
    with live.view() as searcher:  # acknowledged: found by id, its filter, and its text
        stored = searcher.store.get([doc.id], searcher.seq)
        assert doc.id in stored and stored[doc.id].text == doc.text
        hits = searcher.search("boundary layer", k=100, retrievers=["bm25"], filter={"term": {"tag": value}}).hits
        assert doc.id in {h.id for h in hits}
    assert live.delete([doc.id]).deleted == 1


@pytest.fixture(scope="module")
def live(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveIndex]:
    copy = tmp_path_factory.mktemp("live-copy")
    shutil.copytree(IndexRoot(root).resolve("small"), copy / "small")
    index = LiveIndex.open(copy / "small")
    yield index
    index.close()


@pytest.fixture(scope="module")
def server(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    copy = tmp_path_factory.mktemp("served")
    shutil.copytree(IndexRoot(root).resolve("small"), copy / "small")
    s = Server(copy)
    yield s
    s.stop()


def _post(server: Server, path: str, body: object, method: str = "POST") -> httpx.Response:
    """``body`` as JSON with every non-ASCII character escaped: lone surrogates travel as ``\\ud800``."""
    return httpx.request(method, f"{server.url}{path}", content=json.dumps(body).encode(), timeout=60,
                         headers={"content-type": "application/json"})


def test_the_lone_surrogate_search_of_the_issue(server: Server) -> None:
    r = httpx.post(f"{server.url}/v1/indexes/small/search", content=LONE, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["hits"]
    r = _post(server, "/v1/indexes/small/search", {"query": "wing", "filter": {"term": {"tag": "a\ud800"}}})
    assert r.status_code == 422 and "lone surrogate" in r.json()["error"]["message"], r.text


@pytest.mark.slow  # a property test over dozens of hostile strings (half a minute)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(query=HOSTILE, other=HOSTILE, tag=HOSTILE)
def test_the_api_answers_200_or_422(server: Server, query: str, other: str, tag: str) -> None:
    base = "/v1/indexes/small"
    answers = [
        _post(server, f"{base}/search", {"query": query, "k": 3}),
        _post(server, f"{base}/search",
              {"query": query or "wing", "filter": {"term": {"tag": tag}}, "highlight": True}),
        _post(server, f"{base}/search", {"query": "wing", "filter": {"term": {tag or "x": "odd"}}}),
        _post(server, f"{base}/search", {"query": "wing", "rerank": {"model": other}}),
        _post(server, f"{base}/search", {"retrievers": ["splade"], "query_sparse": {"splade": {other or "x": 1.0}}}),
        _post(server, f"{base}/search/batch", {"queries": [query or "x", other or "y"], "k": 2}),
    ]
    for r in answers:
        assert r.status_code in (200, 422), r.text
    upsert = _post(server, f"{base}/documents", {"documents": [{"_id": other or "x", "title": query, "text": "wing",
                                                               "metadata": {"tag": tag}}]}, "PUT")
    assert upsert.status_code in (200, 422), upsert.text
    if upsert.status_code == 200:  # acknowledged: found by its id
        r = _post(server, f"{base}/search", {"query": "wing", "retrievers": ["bm25"], "k": 100,
                                             "filter": {"term": {"tag": tag}}})
        assert r.status_code == 200 and (other or "x") in {h["id"] for h in r.json()["hits"]}, r.text
    delete = _post(server, f"{base}/documents", {"ids": [other or "x"]}, "DELETE")
    assert delete.status_code in (200, 422), delete.text


@pytest.mark.slow  # the CLI in subprocesses
def test_the_cli_takes_any_text(root: Path, tmp_path: Path) -> None:
    """Queries from argv (a non-UTF-8 byte arrives as a lone surrogate), and a corpus file of JSON escapes."""
    for query in ("wing \ud800 flutter", "\udcff", "a\x00b"):
        proc = run_cli("search", "small", query, "--json", root=root)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["hits"] is not None
    proc = run_cli("search", "small", "wing", "--filter", json.dumps({"term": {"tag": "\ud800"}}), root=root)
    assert_one_line_error(proc, "lone surrogate")
    # A real process: its stdout encodes what it prints.
    out = hybrid("search", "small", "wing \udcff flutter", "--json", root=root)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    corpus = tmp_path / "hostile.jsonl"
    corpus.write_text('{"_id": "s1", "title": "wing \\ud800", "text": "flutter \\u0000 tail"}\n'
                      '{"_id": "s2\\ud800", "text": "unsafe id"}\n')
    live_root = tmp_path / "root"
    shutil.copytree(IndexRoot(root).resolve("small"), live_root / "small")
    proc = run_cli("index", "add", "small", str(corpus), "--quiet", root=live_root)
    assert_one_line_error(proc, "lone surrogate")  # the fail mode names the line
    proc = run_cli("index", "add", "small", str(corpus), "--quiet", "--on-error", "skip", root=live_root)
    assert proc.returncode == 0, proc.stderr
    with Searcher.open(IndexRoot(live_root).resolve("small")) as searcher:
        docs = searcher.store.get(["s1"], None)
    assert docs["s1"].title == "wing \ufffd" and docs["s1"].text == "flutter   tail"
