"""Lucene through Pyserini/Anserini: building BM25 and impact indexes, and searching them.

BM25 builds go through Anserini's ``IndexCollection`` in-process (the JVM is already up), fed with
JSONL shards so its worker threads can index in parallel; impact builds through the project's impact writer
(:mod:`indexes.storage.lucene.impacts`), which gives Lucene each impact as a frequency. Searches run Anserini's queries on Lucene's
``IndexSearcher`` without Anserini's search wrapper (:mod:`indexes.storage.lucene.direct`), with the
wrapper's hits and scores: BM25 as Pyserini's ``LuceneSearcher``, impacts as ``SimpleImpactSearcher``
with our own query vectors (Pyserini's Python wrapper drops query terms whose idf is 0, which would
break "score == dot product" for terms present in every document).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from indexes.storage.lucene.direct import (
    Bm25Queries,
    DirectSearcher,
    ImpactQueries,
    SegmentIds,
    bm25_similarity,
    impact_similarity,
    open_reader,
    read_postings,
)
from indexes.storage.lucene.impacts import Chunk, ImpactBuilder
from indexes.storage.lucene.writer import Kind, write_new_index
from retrieval.core.errors import HybridError
from retrieval.core.filters import Filter
from retrieval.core.java_text import safe_text
from retrieval.core.jvm import JNI_LOCK, ensure_pyserini
from retrieval.core.types import PrfConfig, ScoredDoc, SparseVector

BM25_K1 = 0.9
BM25_B = 0.4


class LuceneBuildError(HybridError, RuntimeError):
    pass


def write_jsonl_shards(records: Iterable[dict[str, Any]], folder: Path, shard_size: int = 50_000) -> int:
    """Write records as ``docs-NNNNN.jsonl`` files; returns the record count."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    handle = None
    try:
        for record in records:
            if count % shard_size == 0:
                if handle:
                    handle.close()
                handle = (folder / f"docs-{count // shard_size:05d}.jsonl").open("w", encoding="utf-8")
            handle.write(json.dumps(record, ensure_ascii=False))
            handle.write("\n")
            count += 1
    finally:
        if handle:
            handle.close()
    return count


def index_collection(collection: str, input_dir: Path, index_dir: Path, threads: int, extra: Sequence[str], expected: int) -> None:
    ensure_pyserini()
    from jnius import autoclass

    args = [
        "-collection", collection,
        "-generator", "DefaultLuceneDocumentGenerator",
        "-input", str(input_dir),
        "-index", str(index_dir),
        "-threads", str(max(1, threads)),
        "-quiet",
        *extra,
    ]
    autoclass("io.anserini.index.IndexCollection").main(args)
    indexed = lucene_doc_count(index_dir)
    if indexed != expected:
        raise LuceneBuildError(f"Lucene indexed {indexed} of {expected} documents in {index_dir}")


def lucene_doc_count(index_dir: Path) -> int:
    ensure_pyserini()
    from pyserini.index.lucene import LuceneIndexReader

    with JNI_LOCK:
        try:
            reader = LuceneIndexReader(str(index_dir))
        except Exception as exc:  # a JavaException for a missing or broken index
            raise LuceneBuildError(f"{index_dir}: not a readable Lucene index ({exc})") from None
        return int(reader.stats()["documents"])


def build_bm25(docs: Iterable[tuple[str, str, dict[str, Any]]], work_dir: Path, index_dir: Path, threads: int,
               expected: int, with_metadata: bool = False) -> None:
    """Index (id, contents, metadata) with the default analyzer, as Pyserini's BEIR "flat" indexes; with
    ``with_metadata``, each document also gets its metadata's filterable fields."""
    if with_metadata:
        write_documents("bm25", docs, index_dir, expected)
        return
    staged = work_dir / "bm25-input"
    write_jsonl_shards(({"id": i, "contents": c} for i, c, _ in docs), staged)
    index_collection(
        "JsonCollection", staged, index_dir, threads, ["-storePositions", "-storeDocvectors", "-storeRaw"], expected
    )


def build_impact(chunks: Iterable[Chunk], work_dir: Path, index_dir: Path, threads: int, expected: int,
                 doc_vectors: bool = True, matrix: Path | None = None) -> dict[str, Any]:
    """Index integer impacts through the impact writer (:mod:`indexes.storage.lucene.impacts`), ``chunks`` of
    documents in store order: Lucene stores each impact as the term's frequency and, with ``doc_vectors`` (for
    learned-sparse PRF), each document's vector as a term vector; with ``matrix``, the impact matrix's parts are
    written there too. Returns where the time went: ``read_s`` (producing the chunks) and the writer's stages."""
    builder = ImpactBuilder(index_dir, work_dir, doc_vectors, threads, matrix)
    read = 0.0
    try:
        source = iter(chunks)
        while True:
            started = time.perf_counter()
            chunk = next(source, None)
            read += time.perf_counter() - started
            if chunk is None:
                break
            builder.add_chunk(chunk)
        summary = builder.finish()
    finally:
        builder.close()
    (index_dir / "write.lock").unlink(missing_ok=True)  # as IndexCollection's and write_new_index's indexes
    indexed = lucene_doc_count(index_dir)
    if indexed != expected:
        raise LuceneBuildError(f"Lucene indexed {indexed} of {expected} documents in {index_dir}")
    return {"read_s": round(read, 3), **summary}


def build_impact_anserini(vectors: Iterable[tuple[str, dict[str, int]]], work_dir: Path, index_dir: Path, threads: int,
                          expected: int, doc_vectors: bool = True) -> None:
    """The former path, Anserini's ``IndexCollection`` over ``JsonVectorCollection`` (each term repeated ``impact``
    times as text): kept only as the reference the impact writer is compared with (its test and
    ``eval/bench/lucene_ceiling.py``), not as an option. With one thread, Lucene's order is the input's."""
    staged = work_dir / "splade-input"
    write_jsonl_shards(({"id": i, "contents": "", "vector": v} for i, v in vectors), staged)
    flags = ["-impact", "-pretokenized"] + (["-storeDocvectors"] if doc_vectors else [])
    index_collection("JsonVectorCollection", staged, index_dir, threads, flags, expected)


def write_documents(kind: Kind, docs: Iterable[tuple[str, Any, dict[str, Any]]], index_dir: Path, expected: int,
                    doc_vectors: bool = True) -> None:
    """A batch build through :class:`LuceneWriter`: the documents ``IndexCollection`` would make, plus their
    metadata fields, which ``IndexCollection`` cannot add. One thread writes (Lucene analyzes on it)."""
    write_new_index(index_dir, kind, docs, doc_vectors, ram_buffer_mb=256.0)
    indexed = lucene_doc_count(index_dir)
    if indexed != expected:
        raise LuceneBuildError(f"Lucene indexed {indexed} of {expected} documents in {index_dir}")


class Bm25Index:
    """BM25 through Lucene directly, with ``SimpleSearcher``'s hits and scores (see :mod:`lucene_direct`).

    ``reader``: a point-in-time reader of a live index (taken over: ``close`` releases it); ``ids``: the
    index's per-segment id tables, shared by its successive readers.
    """

    def __init__(self, index_dir: Path, k1: float = BM25_K1, b: float = BM25_B, reader: Any = None,
                 ids: SegmentIds | None = None) -> None:
        self._index_dir, self._k1, self._b = index_dir, k1, b
        self._prf_searcher: Any = None
        reader = reader if reader is not None else open_reader(index_dir)
        try:
            self._queries = Bm25Queries()
            self._searcher = DirectSearcher(reader, bm25_similarity(k1, b), ids or SegmentIds())
        except BaseException:
            with JNI_LOCK:
                reader.close()
            raise

    def search(self, query: str, k: int, prf: PrfConfig | None = None, where: Filter | None = None) -> list[ScoredDoc]:
        """Top ``k`` for ``query``; ``where`` restricts the hits to the documents a metadata filter selects
        (not with ``prf``: Anserini's feedback round would search without it)."""
        if prf is not None:
            return self.batch_search([query], k, 1, prf)[0]
        return self._searcher.top(self._queries.build(query), k, where)

    def batch_search(self, queries: Sequence[str], k: int, threads: int, prf: PrfConfig | None = None,
                     where: Filter | None = None) -> list[list[ScoredDoc]]:
        if prf is None:
            return [self.search(q, k, where=where) for q in queries]
        if where is not None:
            raise ValueError("BM25 PRF runs inside Anserini, which cannot apply a metadata filter")
        qids = [str(i) for i in range(len(queries))]
        with JNI_LOCK, self._feedback(prf) as searcher:
            results = searcher.batch_search([safe_text(q) for q in queries], qids, k, threads)
            return [[ScoredDoc(h.docid, float(h.score)) for h in results.get(q, [])] for q in qids]

    def _anserini(self) -> Any:
        """Anserini's ``LuceneSearcher`` over this index's reader, made on the first PRF request: RM3 and
        Rocchio are Anserini's own and run inside its searcher. It shares the reader (one more reference,
        released when it closes)."""
        if self._prf_searcher is None:
            ensure_pyserini()
            from pyserini.search.lucene import LuceneSearcher

            from indexes.storage.lucene.anserini import point_at_reader

            reader = self._searcher.reader
            searcher = LuceneSearcher(str(self._index_dir))
            searcher.set_bm25(self._k1, self._b)
            reader.incRef()
            point_at_reader(searcher.object, reader)
            self._prf_searcher = searcher
        return self._prf_searcher

    @contextmanager
    def _feedback(self, prf: PrfConfig) -> Iterator[Any]:
        """Anserini's own RM3/Rocchio (from the BM25 index's stored document vectors) for one call.

        The Java searcher holds one feedback setting, so it is set and cleared inside the JNI lock the
        caller holds: concurrent requests with other settings never see it. The Java methods are
        called directly: Pyserini's wrappers probe document 0's term vector, which an empty live
        index lacks. The collection class ``None`` makes Anserini read the feedback documents' terms
        from their stored term vectors (the BM25 index stores them, batch-built and live alike).
        """
        searcher = self._anserini()
        jsearcher = searcher.object
        if prf.method == "rm3":
            jsearcher.set_rm3(None, int(prf.fb_terms), int(prf.fb_docs), float(prf.original_weight), False, True)
        elif prf.method == "rocchio":
            # Positive feedback only (gamma 0): the top fb_docs documents, fb_terms terms.
            jsearcher.set_rocchio(None, int(prf.fb_terms), int(prf.fb_docs), 0, 0, float(prf.alpha), float(prf.beta), 0.0,
                                  False, False)
        else:
            raise ValueError(f"BM25 has no PRF method {prf.method!r}")
        try:
            yield searcher
        finally:
            if prf.method == "rm3":
                jsearcher.unset_rm3()
            else:
                jsearcher.unset_rocchio()

    def close(self) -> None:
        if self._prf_searcher is not None:
            with JNI_LOCK:
                self._prf_searcher.close()  # releases its reference to the shared reader
        self._searcher.close()


class ImpactIndex:
    """Impacts through Lucene directly, with ``SimpleImpactSearcher``'s hits and scores; arguments as
    for :class:`Bm25Index`. A query vector crosses into Java as one JSON string."""

    def __init__(self, index_dir: Path, reader: Any = None, ids: SegmentIds | None = None) -> None:
        reader = reader if reader is not None else open_reader(index_dir)
        try:
            self._queries = ImpactQueries()
            self._searcher = DirectSearcher(reader, impact_similarity(), ids or SegmentIds())
            self._idf: dict[str, float] = {}
        except BaseException:
            with JNI_LOCK:
                reader.close()
            raise

    def search(self, vector: dict[str, int], k: int, where: Filter | None = None) -> list[ScoredDoc]:
        if not vector:
            return []
        return self._searcher.top(self._queries.build(vector), k, where)

    def batch_search(self, vectors: Sequence[dict[str, int]], k: int, threads: int, where: Filter | None = None
                     ) -> list[list[ScoredDoc]]:
        return [self.search(v, k, where) for v in vectors]

    def close(self) -> None:
        self._searcher.close()

    def idf(self, terms: Sequence[str]) -> list[float]:
        """BM25's IDF of each term over this reader, ``ln(1 + (N - df + 0.5) / (df + 0.5))``; 0 for a term no
        document holds. Kept per term for the reader's life (a live index's next view has a new reader)."""
        missing = [t for t in dict.fromkeys(terms) if t not in self._idf]
        if missing:
            count, freqs = self._searcher.doc_freqs(missing)
            for term, df in zip(missing, freqs):
                self._idf[term] = math.log(1.0 + (count - df + 0.5) / (df + 0.5)) if df else 0.0
        return [self._idf[t] for t in terms]

    def doc_vectors(self, doc_ids: Sequence[str]) -> list[SparseVector | None]:
        """Each document's impacts as stored in its term vector (None: the document has none, because
        the index was built before term vectors were stored, or the id is gone)."""
        from jnius import autoclass

        utils = autoclass("io.anserini.index.IndexReaderUtils")
        mapper = autoclass("com.fasterxml.jackson.databind.ObjectMapper")()
        out: list[SparseVector | None] = []
        with JNI_LOCK:
            reader = self._searcher.reader
            for doc_id in doc_ids:
                try:
                    vector = utils.getDocumentVector(reader, doc_id)
                except Exception:  # JavaException: no such id, or no term vector
                    vector = None
                # One JNI call per document: the map crosses as JSON, not entry by entry.
                out.append({t: int(w) for t, w in json.loads(mapper.writeValueAsString(vector)).items()}
                           if vector is not None else None)
        return out

def document_impacts(index_dir: Path) -> dict[str, dict[str, int]]:
    """Every live document's impacts (term -> weight) as Lucene stores them, read from the postings.

    For baselines that must score exactly what Lucene scores; one pass over all postings, so it is
    meant for benchmark set-up, not for a query path.
    """
    reader = open_reader(index_dir)
    try:
        table = SegmentIds().table(reader)
        return read_postings(reader, table)
    finally:
        with JNI_LOCK:
            reader.close()
