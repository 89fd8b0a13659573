"""Lucene through Pyserini/Anserini: building BM25 and impact indexes, and searching them.

Builds go through Anserini's ``IndexCollection`` in-process (the JVM is already up), fed with
JSONL shards so its worker threads can index in parallel. Searches go to Anserini's Java searchers
directly: BM25 through Pyserini's ``LuceneSearcher``; impacts through ``SimpleImpactSearcher`` with
our own query vectors (Pyserini's Python wrapper drops query terms whose idf is 0, which would
break "score == dot product" for terms present in every document).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from retrieval.core.errors import HybridError
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


def build_bm25(docs: Iterable[tuple[str, str]], work_dir: Path, index_dir: Path, threads: int, expected: int) -> None:
    """Index (id, contents) pairs with the default analyzer, as Pyserini's BEIR "flat" indexes."""
    staged = work_dir / "bm25-input"
    write_jsonl_shards(({"id": i, "contents": c} for i, c in docs), staged)
    index_collection(
        "JsonCollection", staged, index_dir, threads, ["-storePositions", "-storeDocvectors", "-storeRaw"], expected
    )


def build_impact(vectors: Iterable[tuple[str, dict[str, int]]], work_dir: Path, index_dir: Path, threads: int, expected: int) -> None:
    """Index pre-tokenized integer impacts: Lucene stores each weight as the term's frequency, and (for
    learned-sparse PRF) each document's vector as a term vector."""
    staged = work_dir / "splade-input"
    write_jsonl_shards(({"id": i, "contents": "", "vector": v} for i, v in vectors), staged)
    index_collection("JsonVectorCollection", staged, index_dir, threads, ["-impact", "-pretokenized", "-storeDocvectors"],
                     expected)


def _hits(java_hits: Any) -> list[ScoredDoc]:
    return [ScoredDoc(h.docid, float(h.score)) for h in java_hits]


class Bm25Index:
    """``reader``: a point-in-time reader of a live index (taken over: ``close`` releases it)."""

    def __init__(self, index_dir: Path, k1: float = BM25_K1, b: float = BM25_B, reader: Any = None) -> None:
        ensure_pyserini()
        from pyserini.search.lucene import LuceneSearcher

        with JNI_LOCK:
            self._searcher = LuceneSearcher(str(index_dir))
            self._searcher.set_bm25(k1, b)
            if reader is not None:
                from indexes.storage.anserini import point_at_reader

                point_at_reader(self._searcher.object, reader)

    def search(self, query: str, k: int, prf: PrfConfig | None = None) -> list[ScoredDoc]:
        with JNI_LOCK, self._feedback(prf):
            return _hits(self._searcher.search(query, k))

    def batch_search(self, queries: Sequence[str], k: int, threads: int, prf: PrfConfig | None = None
                     ) -> list[list[ScoredDoc]]:
        qids = [str(i) for i in range(len(queries))]
        with JNI_LOCK, self._feedback(prf):
            results = self._searcher.batch_search(list(queries), qids, k, threads)
            return [_hits(results.get(q, [])) for q in qids]

    @contextmanager
    def _feedback(self, prf: PrfConfig | None) -> Iterator[None]:
        """Anserini's own RM3/Rocchio (from the BM25 index's stored document vectors) for one call.

        The Java searcher holds one feedback setting, so it is set and cleared inside the JNI lock the
        caller holds: concurrent requests with other settings never see it. The Java methods are
        called directly: Pyserini's wrappers probe document 0's term vector, which an empty live
        index lacks. The collection class ``None`` makes Anserini read the feedback documents' terms
        from their stored term vectors (the BM25 index stores them, batch-built and live alike).
        """
        if prf is None:
            yield
            return
        jsearcher = self._searcher.object
        if prf.method == "rm3":
            jsearcher.set_rm3(None, int(prf.fb_terms), int(prf.fb_docs), float(prf.original_weight), False, True)
        elif prf.method == "rocchio":
            # Positive feedback only (gamma 0): the top fb_docs documents, fb_terms terms.
            jsearcher.set_rocchio(None, int(prf.fb_terms), int(prf.fb_docs), 0, 0, float(prf.alpha), float(prf.beta), 0.0,
                                  False, False)
        else:
            raise ValueError(f"BM25 has no PRF method {prf.method!r}")
        try:
            yield
        finally:
            if prf.method == "rm3":
                jsearcher.unset_rm3()
            else:
                jsearcher.unset_rocchio()

    def close(self) -> None:
        with JNI_LOCK:
            self._searcher.close()


class ImpactIndex:
    """``reader``: as for :class:`Bm25Index`."""

    def __init__(self, index_dir: Path, reader: Any = None) -> None:
        ensure_pyserini()
        from jnius import autoclass

        with JNI_LOCK:
            self._searcher = autoclass("io.anserini.search.SimpleImpactSearcher")(str(index_dir))
            if reader is not None:
                from indexes.storage.anserini import point_at_reader

                point_at_reader(self._searcher, reader)
        self._map = autoclass("java.util.HashMap")
        self._list = autoclass("java.util.ArrayList")
        self._int = autoclass("java.lang.Integer")

    def _jquery(self, vector: dict[str, int]) -> Any:
        jmap = self._map()
        for token, weight in vector.items():
            jmap.put(token, self._int(int(weight)))
        return jmap

    def search(self, vector: dict[str, int], k: int) -> list[ScoredDoc]:
        if not vector:
            return []
        with JNI_LOCK:
            return _hits(self._searcher.search(self._jquery(vector), k))

    def batch_search(self, vectors: Sequence[dict[str, int]], k: int, threads: int) -> list[list[ScoredDoc]]:
        with JNI_LOCK:
            queries, qids = self._list(), self._list()
            for i, vector in enumerate(vectors):
                queries.add(self._jquery(vector))
                qids.add(str(i))
            results = self._searcher.batch_search(queries, qids, int(k), int(threads))
            by_qid = {entry.getKey(): entry.getValue() for entry in results.entrySet().toArray()}
            return [_hits(by_qid[str(i)]) if vectors[i] and str(i) in by_qid else [] for i in range(len(vectors))]

    def close(self) -> None:
        with JNI_LOCK:
            self._searcher.close()

    def doc_vectors(self, doc_ids: Sequence[str]) -> list[SparseVector | None]:
        """Each document's impacts as stored in its term vector (None: the document has none, because
        the index was built before term vectors were stored, or the id is gone)."""
        from jnius import autoclass

        from indexes.storage.anserini import reader_of

        utils = autoclass("io.anserini.index.IndexReaderUtils")
        mapper = autoclass("com.fasterxml.jackson.databind.ObjectMapper")()
        out: list[SparseVector | None] = []
        with JNI_LOCK:
            reader = reader_of(self._searcher)
            for doc_id in doc_ids:
                try:
                    vector = utils.getDocumentVector(reader, doc_id)
                except Exception:  # JavaException: no such id, or no term vector
                    vector = None
                # One JNI call per document: the map crosses as JSON, not entry by entry.
                out.append({t: int(w) for t, w in json.loads(mapper.writeValueAsString(vector)).items()}
                           if vector is not None else None)
        return out
