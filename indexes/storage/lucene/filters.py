"""Metadata in Lucene: the filterable fields a document gets, and a filter tree as a Lucene query.

Both Lucene indexes (BM25 and impacts), batch-built and live alike, hold every metadata value of a
document (:func:`retrieval.core.fields.document_fields`) in fields of their own, apart from Anserini's
``id``/``contents``/``raw``:

* ``kw.FIELD``: a ``StringField`` per keyword form (exact, not analyzed);
* ``num.FIELD``: a ``DoublePoint`` per number or date (epoch milliseconds);
* ``has``: a ``StringField`` holding the name of every field the document has a value for (``exists``).

Lucene wants one schema per field name across documents, so the forms never share a name. A search
runs ``BooleanQuery(MUST query, FILTER filter)``: the filter clause scores nothing, so hits and scores
are the unfiltered query's, restricted before top-k. Filter queries are immutable and cached by tree.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from retrieval.core.fields import document_fields
from retrieval.core.filters import And, Exists, Filter, KeywordIn, Not, NumberIn, NumberRange, Or
from retrieval.core.java_text import checked_metadata, checked_value
from retrieval.core.jvm import JNI_LOCK, ensure_pyserini

HAS_FIELD = "has"


def keyword_field(name: str) -> str:
    return f"kw.{name}"


def numeric_field(name: str) -> str:
    return f"num.{name}"


class _Java:
    """Java classes, loaded once (the JVM must be up first)."""

    def __init__(self) -> None:
        ensure_pyserini()
        from jnius import autoclass

        self.StringField = autoclass("org.apache.lucene.document.StringField")
        self.Store = autoclass("org.apache.lucene.document.Field$Store")
        self.DoublePoint = autoclass("org.apache.lucene.document.DoublePoint")
        self.TermQuery = autoclass("org.apache.lucene.search.TermQuery")
        self.TermInSetQuery = autoclass("org.apache.lucene.search.TermInSetQuery")
        self.Term = autoclass("org.apache.lucene.index.Term")
        self.ArrayList = autoclass("java.util.ArrayList")
        self.Builder = autoclass("org.apache.lucene.search.BooleanQuery$Builder")
        self.Occur = autoclass("org.apache.lucene.search.BooleanClause$Occur")
        self.MatchAll = autoclass("org.apache.lucene.search.MatchAllDocsQuery")
        self.MatchNone = autoclass("org.apache.lucene.search.MatchNoDocsQuery")
        self.Double = autoclass("java.lang.Double")

    @staticmethod
    @functools.cache
    def get() -> _Java:
        return _Java()


def metadata_fields(metadata: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """``metadata``'s filterable fields as ``(form, Lucene field, value)``, form ``keyword`` (a ``StringField``, not
    stored) or ``numeric`` (a ``DoublePoint``), in the order a document gets them; the one definition both writers
    use (:func:`add_metadata` here, the impact writer through :mod:`indexes.storage.lucene.impacts`)."""
    out: list[tuple[str, str, Any]] = []
    seen: set[str] = set()
    for name, value in document_fields(metadata) if metadata else ():
        if value.keyword is not None:
            out.append(("keyword", keyword_field(name), value.keyword))
        if value.numeric is not None:
            out.append(("numeric", numeric_field(name), value.numeric))
        if name not in seen:
            seen.add(name)
            out.append(("keyword", HAS_FIELD, name))
    return out


def add_metadata(document: Any, metadata: Mapping[str, Any]) -> None:
    """Add ``metadata``'s filterable fields to a Lucene document (caller holds the JNI lock)."""
    if not metadata:
        return
    checked_metadata(metadata, strict=False)
    java = _Java.get()
    store_no = java.Store.NO
    for form, field, value in metadata_fields(metadata):
        if form == "keyword":
            document.add(java.StringField(field, value, store_no))
        else:
            document.add(java.DoublePoint(field, value))


@functools.lru_cache(maxsize=512)
def filter_query(node: Filter) -> Any:
    """The Lucene query matching exactly the documents ``node`` selects."""
    java = _Java.get()
    with JNI_LOCK:
        return _query(java, node)


def filtered(query: Any, node: Filter | None) -> Any:
    """``query``'s hits and scores, restricted to the documents ``node`` selects."""
    if node is None:
        return query
    restriction = filter_query(node)
    java = _Java.get()
    with JNI_LOCK:
        builder = java.Builder()
        builder.add(query, java.Occur.MUST)
        builder.add(restriction, java.Occur.FILTER)
        return builder.build()


def _query(java: _Java, node: Filter) -> Any:
    if isinstance(node, KeywordIn):
        for value in node.values:
            checked_value(value, f"filter value of {node.field!r}")
        if len(node.values) == 1:
            return java.TermQuery(java.Term(keyword_field(node.field), node.values[0]))
        terms = java.ArrayList()
        for value in sorted(set(node.values)):
            terms.add(java.Term(keyword_field(node.field), value).bytes())
        return java.TermInSetQuery(keyword_field(node.field), terms)
    if isinstance(node, NumberIn):
        if len(node.values) == 1:
            return java.DoublePoint.newExactQuery(numeric_field(node.field), node.values[0])
        return java.DoublePoint.newSetQuery(numeric_field(node.field), *node.values)
    if isinstance(node, NumberRange):
        low = node.low if node.low is not None else java.Double.NEGATIVE_INFINITY
        high = node.high if node.high is not None else java.Double.POSITIVE_INFINITY
        if low > high:
            return java.MatchNone()
        return java.DoublePoint.newRangeQuery(numeric_field(node.field), float(low), float(high))
    if isinstance(node, Exists):
        return java.TermQuery(java.Term(HAS_FIELD, node.field))
    # Children first: a pyjnius method object is bound to one Java object at a time, so ``builder.add`` must not
    # be looked up before a child's own builder has finished with ``add``.
    if isinstance(node, And):
        clauses = [(_query(java, child), java.Occur.FILTER) for child in node.children]
    elif isinstance(node, Or):
        clauses = [(_query(java, child), java.Occur.SHOULD) for child in node.children]
    elif isinstance(node, Not):
        clauses = [(java.MatchAll(), java.Occur.FILTER), (_query(java, node.child), java.Occur.MUST_NOT)]
    else:
        raise TypeError(f"not a filter node: {node!r}")
    builder = java.Builder()
    for query, occur in clauses:
        builder.add(query, occur)
    if isinstance(node, Or):
        builder.setMinimumNumberShouldMatch(1)
    return builder.build()
