"""Highlights: the passage of a hit's text that best matches the query, with the query's terms marked.

Query and text both go through the BM25 analyzer (:mod:`indexes.storage.lucene.analysis`), so "fluttering"
in a document is marked for the query "flutter" exactly when BM25 matches them, and stop words are never
marked. The passage is the window of at most ``fragment_chars`` characters, starting at a matching token,
that holds the most distinct query terms (then the most matches, then the earliest), widened with the
text around it to fill the size (half before, where there is room) and cut at spaces, with "…" where it
is cut. Each matching token is wrapped in ``pre``/``post`` (Elasticsearch's default ``<em>`` tags; the
text is not HTML-escaped, as Elasticsearch's default encoder leaves it). A hit whose text matches no
query term gets no highlight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from indexes.storage.lucene.analysis import Token, analyze, matching

ELLIPSIS = "…"


@dataclass(frozen=True)
class HighlightConfig:
    pre: str = "<em>"
    post: str = "</em>"
    fragment_chars: int = 200


def query_terms(query: str) -> frozenset[str]:
    return frozenset(t.term for t in analyze(query))


def highlight(text: str, terms: frozenset[str], config: HighlightConfig = HighlightConfig()) -> str | None:
    """The best passage of ``text`` for the analyzed query ``terms``, marked; None when nothing matches."""
    hits = matching(text, terms) if text else []
    if not hits:
        return None
    first, last = _best_window(hits, config.fragment_chars)
    start, end = _widen(text, hits[first].start, hits[last].end, config.fragment_chars)
    parts = [ELLIPSIS if start > 0 else ""]
    cursor = start
    for token in hits[first : last + 1]:
        parts += [text[cursor : token.start], config.pre, text[token.start : token.end], config.post]
        cursor = token.end
    parts += [text[cursor:end], ELLIPSIS if end < len(text) else ""]
    return "".join(parts)


def _best_window(hits: Sequence[Token], size: int) -> tuple[int, int]:
    """(first, last) match of the best window of at most ``size`` characters that starts at a match."""
    best: tuple[int, int, int] | None = None  # (-distinct terms, -matches, first)
    best_last = 0
    for m in range(len(hits)):
        last = m
        while last + 1 < len(hits) and hits[last + 1].end - hits[m].start <= size:
            last += 1
        key = (-len({t.term for t in hits[m : last + 1]}), -(last - m + 1), m)
        if best is None or key < best:
            best, best_last = key, last
    assert best is not None
    return best[2], best_last


def _widen(text: str, start: int, end: int, size: int) -> tuple[int, int]:
    """The span [start, end) grown to about ``size`` characters (half the room before it, as far as the text
    allows), its ends moved inward to spaces so that no word is cut."""
    room = max(0, size - (end - start))
    before = min(start, room // 2)
    new_start = start - before
    new_end = min(len(text), end + room - before)
    new_start = max(0, new_start - max(0, size - (new_end - new_start)))  # text ended early: take more before
    if new_start > 0 and not text[new_start - 1].isspace():
        space = text.find(" ", new_start, start)
        new_start = space + 1 if space >= 0 else start
    if new_end < len(text) and not text[new_end].isspace():
        space = text.rfind(" ", end, new_end)
        new_end = space if space >= 0 else end
    return new_start, new_end
