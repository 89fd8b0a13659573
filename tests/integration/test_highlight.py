"""Highlights on the real small index and over HTTP: marked words are the query's terms as BM25's analyzer
sees them (stems, no stop words), the passage is the hit's own text, and offsets survive non-ASCII text."""

from __future__ import annotations

import re

import httpx
import pytest

from indexes.storage.lucene.analysis import analyze
from retrieval.search.highlight import ELLIPSIS, HighlightConfig, highlight, query_terms
from retrieval.search.pipeline import SearchError
from tests.support.server import Server

QUERY = "the flutter of swept wings at supersonic speeds"
MARK = re.compile(r"<em>(.*?)</em>")


def test_hits_carry_their_best_passage_with_the_query_terms_marked(searcher) -> None:  # type: ignore[no-untyped-def]
    result = searcher.search(QUERY, k=10, highlight=True, include_text=True)
    terms = query_terms(QUERY)
    assert "the" not in terms and "flutter" in terms and "wing" in terms  # stop word dropped, plural stemmed
    marked_any = False
    for hit in result.hits:
        words = {t.term for t in analyze(hit.text)}
        if not words & terms:
            assert hit.highlight is None
            continue
        marked_any = True
        assert hit.highlight is not None
        plain = hit.highlight.replace("<em>", "").replace("</em>", "").strip(ELLIPSIS)
        assert plain in hit.text and len(plain) <= 200
        for word in MARK.findall(hit.highlight):
            assert {t.term for t in analyze(word)} <= terms, word
        assert "<em>the</em>" not in hit.highlight.lower()
    assert marked_any
    assert "highlight" in result.timings_ms


def test_the_passage_holds_the_most_query_terms_and_cuts_no_word() -> None:
    text = ("Intro words about nothing much at all. " * 6 + "Swept wings flutter at supersonic speeds, said the study. "
            + "More filler text follows here. " * 6)
    out = highlight(text, query_terms(QUERY), HighlightConfig(fragment_chars=80))
    assert out is not None and out.startswith(ELLIPSIS) and out.endswith(ELLIPSIS)
    assert MARK.findall(out) == ["Swept", "wings", "flutter", "supersonic", "speeds"]
    body = out.strip(ELLIPSIS).replace("<em>", "").replace("</em>", "")
    assert len(body) <= 80 and f" {body} " in f" {text} "  # cut at spaces
    assert highlight("nothing relevant here", query_terms(QUERY)) is None


def test_offsets_survive_characters_outside_ascii_and_the_bmp() -> None:
    text = "Naïve café 😀 results: the flutter of 𝔴ings and wings."
    out = highlight(text, query_terms("wing flutter"), HighlightConfig("[", "]"))
    assert out == "Naïve café 😀 results: the [flutter] of 𝔴ings and [wings]."


def test_highlight_needs_query_text(searcher) -> None:  # type: ignore[no-untyped-def]
    vector = searcher.searchers["dense"].encode_queries(["wing flutter"])[0].tolist()
    with pytest.raises(SearchError, match="highlight marks the query's words"):
        searcher.search("", retrievers=["dense"], vectors={"dense": [vector]}, highlight=True)


def test_highlight_over_http(server: Server) -> None:
    r = httpx.post(f"{server.url}/v1/indexes/small/search", timeout=60,
                   json={"query": QUERY, "k": 5, "highlight": True, "retrievers": ["bm25"]})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert hits and all("<em>" in h["highlight"] for h in hits)  # every BM25 hit holds a query term
    plain = httpx.post(f"{server.url}/v1/indexes/small/search", timeout=60, json={"query": QUERY, "k": 5}).json()
    assert all("highlight" not in h for h in plain["hits"])
