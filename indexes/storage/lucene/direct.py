"""Lucene searches past Anserini's search wrapper, with the wrapper's exact hits and scores.

Anserini's ``SimpleSearcher``/``SimpleImpactSearcher`` sort hits by (score, id) through doc values,
load every hit's stored document and build one Java result object per hit; on an index of a few
thousand documents that costs more than Lucene's search itself. Here Anserini's own query generator
builds the query (so scoring is unchanged), Lucene's ``IndexSearcher`` runs it, and the hits come back
in one string from one JNI call. What the wrapper adds is redone in Python:

* the (score desc, id asc) order: Lucene breaks ties by doc number, so hits are fetched until the
  k-th score is cut strictly, then sorted by (score, id);
* ``ScoreTiesAdjusterReranker``: scores rounded to 1e-4, each tie lowered by 1e-6 per earlier tie,
  in float32 arithmetic as Java does it;
* ids: one table per segment, read once from the ``id`` doc values and kept while the segment lives
  (a segment's documents never change; deletes only hide them), so a new near-real-time reader
  reads only its new segments.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import re
import threading
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexes.storage.lucene import anserini_order
from indexes.storage.lucene.filters import filter_query, filtered
from retrieval.core.filters import Filter
from retrieval.core.java_text import safe_text
from retrieval.core.jvm import JNI_LOCK, ensure_pyserini
from retrieval.core.runs import Run
from retrieval.core.types import ScoredDoc

ID_FIELD = "id"
CONTENTS_FIELD = "contents"
_HIT = re.compile(r'"score":([^,}]+),"doc":(-?\d+)')  # one ScoreDoc as Jackson writes it
POST_FILTER_SHARE = 0.1  # filters matching at least this share of the documents post-filter a pruned search (see top)
TIE_PAD = 16  # extra hits fetched so that a tie at the k-th score is usually resolved in one search
_E4_GAP = 1e-4


class _Java:
    """Java classes, loaded once (autoclass is slow; the JVM must be up first)."""

    _lock = threading.Lock()
    _loaded: _Java | None = None

    def __init__(self) -> None:
        ensure_pyserini()
        from jnius import autoclass, cast

        self.cast = cast
        self.File = autoclass("java.io.File")
        self.FSDirectory = autoclass("org.apache.lucene.store.FSDirectory")
        self.DirectoryReader = autoclass("org.apache.lucene.index.DirectoryReader")
        self.MultiReader = autoclass("org.apache.lucene.index.MultiReader")
        self.IndexSearcher = autoclass("org.apache.lucene.search.IndexSearcher")
        self.DocValues = autoclass("org.apache.lucene.index.DocValues")
        self.ImpactSimilarity = autoclass("io.anserini.search.similarity.ImpactSimilarity")
        self.BM25Similarity = autoclass("org.apache.lucene.search.similarities.BM25Similarity")
        self.Generator = autoclass("io.anserini.search.query.BagOfWordsQueryGenerator")
        self.Analyzer = autoclass("io.anserini.analysis.DefaultEnglishAnalyzer")
        self.ObjectMapper = autoclass("com.fasterxml.jackson.databind.ObjectMapper")
        self.HashMap = autoclass("java.util.HashMap")
        self.Class = autoclass("java.lang.Class")
        self.TypeFactory = autoclass("com.fasterxml.jackson.databind.type.TypeFactory")
        self.MultiTerms = autoclass("org.apache.lucene.index.MultiTerms")
        self.MultiBits = autoclass("org.apache.lucene.index.MultiBits")
        self.PostingsEnum = autoclass("org.apache.lucene.index.PostingsEnum")
        self.Term = autoclass("org.apache.lucene.index.Term")
        self.ScoreMode = autoclass("org.apache.lucene.search.ScoreMode")
        self.FixedBitSet = autoclass("org.apache.lucene.util.FixedBitSet")

    @classmethod
    def get(cls) -> _Java:
        if cls._loaded is None:
            with cls._lock:
                if cls._loaded is None:
                    cls._loaded = _Java()
        return cls._loaded


def open_reader(index_dir: Path) -> Any:
    java = _Java.get()
    with JNI_LOCK:
        return java.DirectoryReader.open(java.FSDirectory.open(java.File(str(index_dir)).toPath()))


def multi_reader(readers: list[Any]) -> Any:
    """One reader over ``readers`` (shards), taking them over: closing it closes them."""
    java = _Java.get()
    with JNI_LOCK:
        subs = [java.cast("org.apache.lucene.index.IndexReader", r) for r in readers]
        return java.MultiReader(subs, True)


class SegmentIds:
    """Lucene doc number -> id, per segment, kept across the readers of one index."""

    def __init__(self) -> None:
        self._by_segment: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def table(self, reader: Any) -> list[str]:
        """The id of every doc number of ``reader`` (deleted documents included; searches skip them)."""
        java = _Java.get()
        table: list[str] = []
        kept: dict[str, list[str]] = {}
        with self._lock, JNI_LOCK:
            for leaf in reader.leaves().toArray():
                if leaf.docBase != len(table):
                    raise RuntimeError(f"Lucene leaf docBase {leaf.docBase} != {len(table)} documents before it")
                segment = java.cast("org.apache.lucene.index.SegmentReader", leaf.reader())
                key = bytes(segment.getSegmentInfo().info.getId()).hex()
                ids = self._by_segment.get(key)
                if ids is None:
                    ids = _read_ids(java, segment)
                kept[key] = ids
                table.extend(ids)
            self._by_segment = kept  # segments merged away drop out
        return table


def _read_ids(java: Any, leaf: Any) -> list[str]:
    info = leaf.getFieldInfos().fieldInfo(ID_FIELD)
    kind = info.getDocValuesType().name() if info is not None else "NONE"
    count = leaf.maxDoc()
    ids = [""] * count
    if kind == "BINARY":
        values = java.DocValues.getBinary(leaf, ID_FIELD)
        read = lambda: values.binaryValue().utf8ToString()  # noqa: E731
    elif kind in ("SORTED", "SORTED_SET"):
        values = java.DocValues.getSorted(leaf, ID_FIELD)
        read = lambda: values.lookupOrd(values.ordValue()).utf8ToString()  # noqa: E731
    else:  # no doc values: stored fields, once per document at open
        fields = leaf.storedFields()
        return [fields.document(d).get(ID_FIELD) or "" for d in range(count)]
    doc = values.nextDoc()
    while doc < count:
        ids[doc] = read()
        doc = values.nextDoc()
    return ids


def read_postings(reader: Any, ids: list[str], field: str = CONTENTS_FIELD) -> dict[str, dict[str, int]]:
    """id -> {term: frequency} over all live documents (for an impact index, frequency is the impact)."""
    java = _Java.get()
    out: dict[str, dict[str, int]] = {}
    end = 2**31 - 1  # DocIdSetIterator.NO_MORE_DOCS
    with JNI_LOCK:
        reader = java.cast("org.apache.lucene.index.IndexReader", reader)
        live = java.MultiBits.getLiveDocs(reader)
        terms = java.MultiTerms.getTerms(reader, field)
        if terms is None:
            return out
        it = terms.iterator()
        term = it.next()
        while term is not None:
            token = term.utf8ToString()
            postings = it.postings(None, java.PostingsEnum.FREQS)
            doc = postings.nextDoc()
            while doc != end:
                if live is None or live.get(doc):
                    out.setdefault(ids[doc], {})[token] = postings.freq()
                doc = postings.nextDoc()
            term = it.next()
    return out


def tie_adjusted(scores: Sequence[float]) -> list[float]:
    """Anserini's ``ScoreTiesAdjusterReranker``: scores (float32) rounded to 1e-4 in double arithmetic, each
    tie lowered by 1e-6 times its place in the run of ties, stored back as float32, as the Java code does.

    Short lists (a page of hits) in plain Python where the neighbours are either equal or clearly apart (integer
    SPLADE scores always are): the double arithmetic is Java's, and ``array('f')`` stores back to float32 as a cast
    does. Long lists, and a gap near a threshold (where float32 subtraction might compare otherwise), go through
    numpy."""
    if len(scores) > _SHORT:
        return _tie_adjusted_exact(_rounded(scores))
    try:
        rounded = array("f", [math.floor(s * 1e4 + 0.5) / 1e4 for s in array("f", scores).tolist()]).tolist()
    except (OverflowError, ValueError):  # an infinite or NaN score: numpy carries it through, as Java does
        return _tie_adjusted_exact(_rounded(scores))
    n = len(rounded)
    if n < 2:
        return rounded
    far = (2 * _E4_GAP + 1e-6 * n) * (1 + 1e-5)  # float32's rounding of a gap or a threshold is far smaller
    gaps = [a - b for a, b in zip(rounded, rounded[1:])]
    if not all(g == 0 or g > far for g in gaps):
        return _tie_adjusted_exact(rounded)
    if 0 not in gaps:
        return rounded  # no neighbours within 1e-4: nothing is nudged (Java's loop agrees)
    out, dup = [rounded[0]], 0
    for gap, score in zip(gaps, rounded[1:]):
        dup = dup + 1 if gap == 0 else 0
        out.append(score - 1e-6 * dup if dup else score)
    return array("f", out).tolist()


_SHORT = 24  # past this many scores, numpy's fixed cost is less than a Python loop's


def _rounded(scores: Sequence[float]) -> np.ndarray:
    """Scores as float32, rounded to 1e-4 in double arithmetic and stored back as float32 (Java's first step)."""
    a = np.asarray(scores, dtype=np.float32)
    return (np.floor(a.astype(np.float64) * 1e4 + 0.5) / 1e4).astype(np.float32)


def _tie_adjusted_exact(scores: Sequence[float] | np.ndarray) -> list[float]:
    """:func:`tie_adjusted` of scores already rounded, in float32 arrays, step by step where neighbours are near
    ties."""
    rounded = np.asarray(scores, dtype=np.float32)
    if len(rounded) < 2:
        return rounded.tolist()
    if not bool(((rounded[:-1] - rounded[1:]) <= 2 * _E4_GAP).any()):
        return rounded.tolist()
    gaps = rounded[:-1] - rounded[1:]
    if not bool(((gaps > 0) & (gaps <= 2 * _E4_GAP + 1e-6 * len(rounded))).any()):
        # Neighbours are either equal or far apart, so a nudge never flips Java's comparison: each tie is
        # lowered by 1e-6 times its place in its run of equal scores.
        index = np.arange(len(rounded))
        starts = np.concatenate(([True], gaps != 0))
        dup = index - np.maximum.accumulate(np.where(starts, index, 0))
        return (rounded.astype(np.float64) - 1e-6 * dup).astype(np.float32).tolist()
    out = rounded.copy()  # near-ties: Java's loop, step by step
    dup = 0
    for i in range(1, len(out)):
        if float(out[i - 1] - out[i]) > 1e-4:
            dup = 0
        else:
            dup += 1
            out[i] = np.float32(float(out[i]) - 1e-6 * dup)
    return out.tolist()


def anserini_ranked(hits: Iterable[tuple[float, str]], k: int) -> list[ScoredDoc]:
    """Anserini's wrapper's top ``k`` of (score, id) pairs: score descending, then id ascending, scores
    :func:`tie_adjusted`. ``hits`` must hold every pair tied with the ``k``-th score."""
    ranked = _anserini_sorted(list(hits), k)
    return list(map(ScoredDoc, [doc_id for _, doc_id in ranked], tie_adjusted([s for s, _ in ranked])))


def _anserini_sorted(hits: list[Any], k: int) -> list[Any]:
    """``hits`` ((score, id, ...) tuples) in Anserini's order, cut at ``k``, in place: two stable sorts keyed in C,
    by id, then by score descending."""
    hits.sort(key=_SECOND)
    hits.sort(key=_FIRST, reverse=True)
    del hits[k:]
    return hits


def anserini_run(hits: list[tuple[float, str, int]], k: int, space: object) -> Run:
    """:func:`anserini_ranked` of (score, id, docno) triples of one document store, as a :class:`Run` (``hits`` is
    reordered in place)."""
    _anserini_sorted(hits, k)
    docnos = np.fromiter(map(_THIRD, hits), dtype=np.int64, count=len(hits))
    return Run(docnos, list(map(_SECOND, hits)), tie_adjusted(list(map(_FIRST, hits))), space)


def anserini_run_arrays(found: np.ndarray, docnos: np.ndarray, k: int, store: Any) -> Run:
    """:func:`anserini_run` of the hits ``found`` (float32 scores) on ``docnos`` of ``store`` (their top ``k`` and
    every tie at the cut), ranked in one compiled call (:mod:`indexes.storage.lucene.anserini_order`); ids are read for
    the hits only, and compared only within runs of equal scores."""
    if anserini_order.ordered is None:  # pragma: no cover - numba is a dependency
        listed = docnos.tolist()
        return anserini_run([(s, i, d) for s, i, d in zip(found.tolist(), store.ids_by_docno(listed), listed)
                             if i is not None], k, store)
    return ranked_run(*anserini_order.ordered(found, docnos, k), k, store)


def ranked_run(ranked_docnos: np.ndarray, ranked: np.ndarray, adjusted: np.ndarray, ties: np.ndarray, k: int,
               store: Any) -> Run:
    """The :class:`Run` of hits ranked by :func:`indexes.storage.lucene.anserini_order.ordered` (its four arrays):
    ids read for the hits only, and compared only within runs of equal scores."""
    listed = ranked_docnos.tolist()
    ids = store.ids_by_docno(listed)
    if None in ids:  # a docno without an id (the matrix never holds one): the plain path drops it, then ranks
        return anserini_run([(s, i, d) for s, i, d in zip(ranked.tolist(), ids, listed) if i is not None], k, store)
    take = len(adjusted)
    if not len(ties):
        return Run(ranked_docnos[:take], ids[:take], adjusted.tolist(), store)
    order = list(range(len(ids)))
    for start, end in ties.tolist():
        order[start:end] = sorted(order[start:end], key=ids.__getitem__)
    del order[take:]
    return Run(ranked_docnos[order], [ids[i] for i in order], adjusted.tolist(), store)


_FIRST, _SECOND, _THIRD = operator.itemgetter(0), operator.itemgetter(1), operator.itemgetter(2)


class DirectSearcher:
    """One Lucene reader searched by ``IndexSearcher``; ``reader`` is taken over (``close`` releases it)."""

    def __init__(self, reader: Any, similarity: Any, ids: SegmentIds) -> None:
        java = _Java.get()
        self._reader = reader
        self._ids = ids.table(reader)
        with JNI_LOCK:
            self._searcher = java.IndexSearcher(java.cast("org.apache.lucene.index.IndexReader", reader))
            self._searcher.setSimilarity(similarity)
        self._mapper = java.ObjectMapper()
        self._bits: dict[Filter, np.ndarray] = {}  # per filter: its matches in this reader

    def _fetch(self, query: Any, n: int) -> list[tuple[float, int]]:
        # The TopDocs go to Jackson whole: reading its scoreDocs field from Python would build one proxy per hit.
        with JNI_LOCK:
            text = self._mapper.writeValueAsString(self._searcher.search(query, n))
        pairs = _HIT.findall(text)
        if len(pairs) != text.count('"shardIndex"'):  # not the shape we expect: parse it properly
            pairs = [(str(h["score"]), str(h["doc"])) for h in json.loads(text)["scoreDocs"]]
        # float32 of the printed value is Java's float exactly (Java prints enough digits to identify it).
        scores = np.array([float(score) for score, _ in pairs], dtype=np.float32).tolist()
        return list(zip(scores, [int(doc) for _, doc in pairs]))

    def top(self, query: Any, k: int, where: Filter | None = None) -> list[ScoredDoc]:
        """The wrapper's top ``k``: (score desc, id asc), tie-adjusted scores; ``where`` keeps only the documents a
        metadata filter selects, with the same hits and scores as ``BooleanQuery(MUST query, FILTER filter)``.

        Lucene 9.9 gives up dynamic pruning (MaxScore/WAND) once a FILTER clause turns a disjunction into a
        conjunction, so a broad filter can cost several times the plain search. The filter's share of the live
        documents decides (one ``count``): none match, no search; all match, the plain search; at least
        :data:`POST_FILTER_SHARE` match, the plain search, pruned, is fetched deep enough that the filter's
        matches among its hits settle the top ``k`` (checked against the filter's bitset, read once per reader),
        else, and for narrower filters, the FILTER clause.
        """
        if where is None:
            return self._ranked(self._fetch_cut(query, k), k)
        restriction = filter_query(where)
        count, live = self._count(restriction)
        if count == 0:
            return []
        if count >= live:
            return self._ranked(self._fetch_cut(query, k), k)
        if count >= POST_FILTER_SHARE * live:
            kept = self._post_filtered(query, k, where, restriction, count / live)
            if kept is not None:
                return self._ranked(kept, k)
        return self._ranked(self._fetch_cut(filtered(query, where), k), k)

    def _fetch_cut(self, query: Any, k: int) -> list[tuple[float, int]]:
        n = k + TIE_PAD
        hits = self._fetch(query, n)
        # Lucene keeps the lowest doc numbers among equal scores; fetch more until the k-th score is cut.
        while len(hits) == n and hits[-1][0] == hits[k - 1][0]:
            n *= 4
            hits = self._fetch(query, n)
        return hits

    def _ranked(self, hits: list[tuple[float, int]], k: int) -> list[ScoredDoc]:
        ids = self._ids
        return anserini_ranked(((score, ids[doc]) for score, doc in hits), k)

    def _post_filtered(self, query: Any, k: int, where: Filter, restriction: Any, share: float
                       ) -> list[tuple[float, int]] | None:
        """The filter's matches among the plain search's hits, fetched until every match that could rank in the top
        ``k`` is among them (the k-th kept score above the last hit's); None when that needs too deep a fetch."""
        bits = self._filter_bits(where, restriction)
        n = math.ceil((k + TIE_PAD) / share * 2)
        limit = max(n * 16, 4096)
        while n <= limit:
            hits = self._fetch(query, n)
            kept = [(score, doc) for score, doc in hits if bits[doc]]
            if len(hits) < n or (len(kept) >= k and kept[k - 1][0] > hits[-1][0]):
                return kept
            n *= 4
        return None

    def _count(self, restriction: Any) -> tuple[int, int]:
        with JNI_LOCK:
            return int(self._searcher.count(restriction)), int(self._searcher.getIndexReader().numDocs())

    def _filter_bits(self, where: Filter, restriction: Any) -> np.ndarray:
        """One bool per doc number of this reader: whether the filter matches it (deleted documents may be set;
        searches never return them). Kept per filter for the reader's life."""
        cached = self._bits.get(where)
        if cached is not None:
            return cached
        java = _Java.get()
        parts: list[np.ndarray] = []
        with JNI_LOCK:
            weight = self._searcher.createWeight(self._searcher.rewrite(restriction), java.ScoreMode.COMPLETE_NO_SCORES,
                                                 1.0)
            for leaf in self._searcher.getIndexReader().leaves().toArray():
                size = leaf.reader().maxDoc()
                scorer = weight.scorer(leaf)
                if scorer is None:
                    parts.append(np.zeros(size, dtype=bool))
                    continue
                fixed = java.FixedBitSet(size)
                getattr(fixed, "or")(scorer.iterator())  # FixedBitSet.or(DocIdSetIterator): Java fills it
                words = np.asarray(fixed.getBits(), dtype="<i8")
                parts.append(np.unpackbits(words.view(np.uint8), bitorder="little")[:size].astype(bool))
        bits = np.concatenate(parts) if parts else np.zeros(0, dtype=bool)
        if len(self._bits) >= 32:
            self._bits.pop(next(iter(self._bits)))
        self._bits[where] = bits
        return bits

    def doc_freqs(self, terms: Sequence[str], field: str = CONTENTS_FIELD) -> tuple[int, list[int]]:
        """(documents in the index, each term's document frequency), as Lucene's statistics count them
        (deleted documents included until merged away, as BM25's statistics)."""
        java = _Java.get()
        with JNI_LOCK:
            reader = java.cast("org.apache.lucene.index.IndexReader", self._reader)
            return reader.maxDoc(), [reader.docFreq(java.Term(field, term)) for term in terms]

    @property
    def reader(self) -> Any:
        """The Lucene reader searched (still this searcher's: ``incRef`` it to keep it past ``close``)."""
        return self._reader

    def close(self) -> None:
        with JNI_LOCK:
            self._reader.decRef()


class ImpactQueries:
    """Impact queries built as ``SimpleImpactSearcher`` builds them, from one JSON string per query."""

    def __init__(self) -> None:
        java = _Java.get()
        self._generator = java.Generator()
        self._mapper = _typed_mapper()()
        with JNI_LOCK:
            # Map<String, Float>: what SimpleImpactSearcher hands its generator after converting our Integers.
            self._type = java.TypeFactory.defaultInstance().constructMapType(
                java.Class.forName("java.util.HashMap"), java.Class.forName("java.lang.String"),
                java.Class.forName("java.lang.Float"))

    def build(self, vector: dict[str, int]) -> Any:
        text = json.dumps(vector, separators=(",", ":"))
        with JNI_LOCK:
            return self._generator.buildQuery(CONTENTS_FIELD, self._mapper.readValue(text, self._type))


@functools.cache
def _typed_mapper() -> Any:
    """A Jackson mapper with ``readValue(String, JavaType)`` bound by signature: pyjnius's overload choice
    would pick ``readValue(String, Class)`` for a ``JavaType`` argument and fail. pyjnius registers such a
    class under its Java name for the whole process, so it is ``JsonMapper`` (an ``ObjectMapper``) and not
    ``ObjectMapper``, which other code reaches through ``autoclass`` with all its methods."""
    from jnius import JavaClass, JavaMethod, MetaJavaClass

    class TypedMapper(JavaClass, metaclass=MetaJavaClass):  # type: ignore[misc]
        __javaclass__ = "com/fasterxml/jackson/databind/json/JsonMapper"
        readValue = JavaMethod("(Ljava/lang/String;Lcom/fasterxml/jackson/databind/JavaType;)Ljava/lang/Object;")

    return TypedMapper


class Bm25Queries:
    """BM25 queries built as ``SimpleSearcher`` builds them: default English analyzer, bag of words."""

    def __init__(self) -> None:
        java = _Java.get()
        self._generator = java.Generator()
        with JNI_LOCK:
            self._analyzer = java.Analyzer.newDefaultInstance()

    def build(self, text: str) -> Any:
        text = safe_text(text)  # a lone surrogate would make pyjnius raise (issue 35)
        with JNI_LOCK:
            return self._generator.buildQuery(CONTENTS_FIELD, self._analyzer, text)


def impact_similarity() -> Any:
    return _Java.get().ImpactSimilarity()


def bm25_similarity(k1: float, b: float) -> Any:
    return _Java.get().BM25Similarity(float(k1), float(b))
