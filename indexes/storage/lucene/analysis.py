"""Text through the BM25 index's analyzer, with each token's character offsets (for highlighting).

The analyzer is Anserini's default English one (Lucene's standard tokenizer, lower-casing, stop words,
Porter stemming), exactly what indexes BM25 ``contents`` and analyzes BM25 queries: a query word and a
document word match here when BM25 would match them. Tokens come from Lucene's ``TokenStream`` with its
``CharTermAttribute`` and ``OffsetAttribute``; the offsets are UTF-16 code units, converted to Python
string indices. :func:`matching` puts Lucene's ``KeepWordFilter`` after the analyzer, so only the tokens
that are query terms cross into Python: three JNI calls per match instead of per word.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from retrieval.core.java_text import safe_text
from retrieval.core.jvm import JNI_LOCK, ensure_pyserini

CHAR_TERM = "org.apache.lucene.analysis.tokenattributes.CharTermAttribute"
OFFSET = "org.apache.lucene.analysis.tokenattributes.OffsetAttribute"


@dataclass(frozen=True)
class Token:
    term: str  # as the analyzer leaves it (stemmed)
    start: int  # Python string indices into the analyzed text
    end: int


class _Java:
    """Java classes, loaded once (the JVM must be up first)."""

    def __init__(self) -> None:
        ensure_pyserini()
        from jnius import autoclass, cast

        self.cast = cast
        self.analyzer = autoclass("io.anserini.analysis.DefaultEnglishAnalyzer").newDefaultInstance()
        self.KeepWordFilter = autoclass("org.apache.lucene.analysis.miscellaneous.KeepWordFilter")
        self.CharArraySet = autoclass("org.apache.lucene.analysis.CharArraySet")
        self.ArrayList = autoclass("java.util.ArrayList")
        self.CharTerm = autoclass(CHAR_TERM)
        self.Offset = autoclass(OFFSET)

    @staticmethod
    @functools.cache
    def get() -> _Java:
        return _Java()


def analyze(text: str) -> list[Token]:
    """Every token the analyzer keeps (stop words dropped), in order, with its span in ``text``."""
    return _tokens(text, None)


def matching(text: str, terms: frozenset[str]) -> list[Token]:
    """The tokens of ``text`` whose analyzed form is one of ``terms`` (analyzed terms, e.g. of a query)."""
    return _tokens(text, terms) if terms else []


@functools.lru_cache(maxsize=256)
def _term_set(terms: frozenset[str]) -> Any:
    java = _Java.get()
    with JNI_LOCK:
        words = java.ArrayList()
        for term in sorted(terms):
            words.add(term)
        return java.CharArraySet(words, False)


def _tokens(text: str, keep: frozenset[str] | None) -> list[Token]:
    if not text:
        return []
    text = safe_text(text)  # same UTF-16 length: the offsets still fit the text the caller holds
    java = _Java.get()
    words = _term_set(keep) if keep is not None else None
    out: list[tuple[str, int, int]] = []
    with JNI_LOCK:
        stream: Any = java.analyzer.tokenStream("contents", text)
        if words is not None:
            stream = java.KeepWordFilter(stream, words)
        try:
            term = java.cast(CHAR_TERM, stream.addAttribute(java.CharTerm))
            offset = java.cast(OFFSET, stream.addAttribute(java.Offset))
            stream.reset()
            while stream.incrementToken():
                out.append((term.toString(), offset.startOffset(), offset.endOffset()))
            stream.end()
        finally:
            stream.close()
    if text.isascii():
        return [Token(t, s, e) for t, s, e in out]
    index = _utf16_to_index(text)
    return [Token(t, index[s], index[e]) for t, s, e in out]


def _utf16_to_index(text: str) -> list[int]:
    """Python index of every UTF-16 offset of ``text`` (characters beyond the BMP take two code units)."""
    table: list[int] = []
    for i, ch in enumerate(text):
        table.append(i)
        if ord(ch) > 0xFFFF:
            table.append(i)
    table.append(len(text))
    return table
