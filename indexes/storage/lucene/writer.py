"""Live adds and deletes on an Anserini-built Lucene index, and near-real-time readers over them.

BM25 documents are made by Anserini's own ``DefaultLuceneDocumentGenerator`` from the collection class
``IndexCollection`` reads (``JsonCollection``); impact documents by the impact writer
(:mod:`indexes.storage.lucene.impacts`), the one that batch-builds them. The ``IndexWriter`` gets the analyzer and
similarity ``IndexCollection`` would use; so a document written here is indexed exactly as a batch build would
have indexed it, and scores stay comparable.

Each document also gets its metadata's filterable fields (:mod:`indexes.storage.lucene.filters`), which
``IndexCollection`` cannot add: batch builds of a corpus with metadata write through this class too.

Searches go through Anserini's ``SimpleSearcher`` / ``SimpleImpactSearcher`` (same query generation,
same score-tie breaking), pointed at a point-in-time NRT reader of the writer: each reader is one
consistent snapshot that later writes never change.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from indexes.storage.lucene import impacts
from indexes.storage.lucene.filters import add_metadata
from retrieval.core.errors import ConflictError
from retrieval.core.java_text import checked_value, safe_text
from retrieval.core.jvm import JNI_LOCK, ensure_pyserini

Kind = Literal["bm25", "impact"]
SEQ_KEY = "hybrid.seq"


class LuceneWriteError(ConflictError, RuntimeError):
    pass


def _jclasses() -> dict[str, Any]:
    ensure_pyserini()
    from jnius import autoclass

    names = {
        "Args": "io.anserini.index.IndexCollection$Args",
        "Generator": "io.anserini.index.generator.DefaultLuceneDocumentGenerator",
        "JsonDoc": "io.anserini.collection.JsonCollection$Document",
        "EnglishAnalyzer": "io.anserini.analysis.DefaultEnglishAnalyzer",
        "WhitespaceAnalyzer": "org.apache.lucene.analysis.core.WhitespaceAnalyzer",
        "BM25Similarity": "org.apache.lucene.search.similarities.BM25Similarity",
        "ImpactSimilarity": "io.anserini.search.similarity.ImpactSimilarity",
        "Config": "org.apache.lucene.index.IndexWriterConfig",
        "OpenMode": "org.apache.lucene.index.IndexWriterConfig$OpenMode",
        "Writer": "org.apache.lucene.index.IndexWriter",
        "TieredMergePolicy": "org.apache.lucene.index.TieredMergePolicy",
        "FSDirectory": "org.apache.lucene.store.FSDirectory",
        "Paths": "java.nio.file.Paths",
        "Term": "org.apache.lucene.index.Term",
        "DirectoryReader": "org.apache.lucene.index.DirectoryReader",
        "HashMap": "java.util.HashMap",
        "ArrayList": "java.util.ArrayList",
        "Class": "java.lang.Class",
    }
    return {k: autoclass(v) for k, v in names.items()}


def _text_setup(j: dict[str, Any], args: Any) -> tuple[Any, Any]:
    """BM25 text, as IndexCollection indexes JsonCollection with -storePositions -storeDocvectors -storeRaw."""
    args.storePositions = True
    args.storeDocvectors = True
    args.storeRaw = True
    return j["EnglishAnalyzer"].fromArguments(args.stemmer, args.keepStopwords, args.stopwords), j["BM25Similarity"]()


def _impact_setup(j: dict[str, Any], args: Any) -> tuple[Any, Any]:
    """Impacts, as IndexCollection indexes JsonVectorCollection with -impact -pretokenized (documents: the impact
    writer's)."""
    return j["WhitespaceAnalyzer"](), j["ImpactSimilarity"]()


def _text_document(writer: LuceneWriter, doc_id: str, payload: Any) -> Any:
    return writer._j["JsonDoc"].fromString(json.dumps({"id": doc_id, "contents": payload}, ensure_ascii=False))


# How each kind of Lucene index is configured and how a document of it is made (impacts: in batches, by the
# impact writer, see LuceneWriter.upsert).
_FORMATS: dict[str, tuple[Callable[[dict[str, Any], Any], tuple[Any, Any]], Callable[[LuceneWriter, str, Any], Any] | None]] = {
    "bm25": (_text_setup, _text_document),
    "impact": (_impact_setup, None),
}
IMPACT_BATCH = 256  # impact documents a Java call: long upserts let other writes' calls in between


class LuceneWriter:
    """One open ``IndexWriter`` (it holds Lucene's ``write.lock``: one writer per index, across processes)."""

    def __init__(self, index_dir: Path, kind: Kind, create: bool = False, doc_vectors: bool = True,
                 ram_buffer_mb: float = 16.0) -> None:
        with JNI_LOCK:
            self._setup(index_dir, kind, create, doc_vectors, ram_buffer_mb)

    def _setup(self, index_dir: Path, kind: Kind, create: bool, doc_vectors: bool, ram_buffer_mb: float) -> None:
        self.kind = kind
        self.index_dir = Path(index_dir)
        j = self._j = _jclasses()
        args = j["Args"]()
        setup, self._make_document = _FORMATS[kind]
        analyzer, similarity = setup(j, args)
        args.storeDocvectors = doc_vectors  # as the index was built: Lucene wants one schema per field
        self._doc_vectors = doc_vectors
        self._generator = j["Generator"](args)
        config = j["Config"](analyzer)
        config.setSimilarity(similarity)
        config.setOpenMode(j["OpenMode"].CREATE if create else j["OpenMode"].APPEND)
        config.setUseCompoundFile(False)
        config.setRAMBufferSizeMB(float(ram_buffer_mb))
        # Our checkpoint decides when deletes are worth a merge; once asked, merge every segment that has one.
        policy = j["TieredMergePolicy"]()
        policy.setForceMergeDeletesPctAllowed(0.0)
        config.setMergePolicy(policy)
        self.index_dir.mkdir(parents=True, exist_ok=True)
        self._directory = j["FSDirectory"].open(j["Paths"].get(str(self.index_dir.resolve())))
        try:
            self._writer = j["Writer"](self._directory, config)
        except Exception as exc:  # LockObtainFailedException, IndexNotFoundException, ...
            self._directory.close()
            message = str(exc)
            if "Lock" in message:
                raise LuceneWriteError(f"{self.index_dir} is open for writing by another process") from None
            raise LuceneWriteError(f"{self.index_dir}: cannot open for writing ({message.splitlines()[0][:200]})") from None

    def _document(self, doc_id: str, payload: str | dict[str, int], metadata: Mapping[str, Any]) -> Any:
        assert self._make_document is not None
        doc_id, payload = checked_value(doc_id, "_id"), safe_text(payload) if isinstance(payload, str) else payload
        document = self._generator.createDocument(self._make_document(self, doc_id, payload))
        add_metadata(document, metadata)
        return document

    def upsert(self, docs: Iterable[tuple[str, str | dict[str, int], Mapping[str, Any]]]) -> None:
        """Replace (or add) each document by id; an empty payload only deletes (Lucene cannot index it)."""
        if self.kind == "impact":
            batch = list(docs)
            for begin in range(0, len(batch), IMPACT_BATCH):
                impacts.update(self._writer, batch[begin:begin + IMPACT_BATCH], self._doc_vectors)  # type: ignore[arg-type]
            return
        term = self._j["Term"]
        for doc_id, payload, metadata in docs:  # the lock per document: searches get their turn during long batches
            if not payload:
                self.delete([doc_id])
            else:
                with JNI_LOCK:
                    self._writer.updateDocument(term("id", doc_id), self._document(doc_id, payload, metadata))

    def add(self, docs: Iterable[tuple[str, str | dict[str, int], Mapping[str, Any]]]) -> int:
        """Append documents to a new index (a batch build: no id can be present yet); returns how many."""
        if self.kind == "impact":
            batch = list(docs)
            self.upsert(batch)
            return len(batch)
        count = 0
        for doc_id, payload, metadata in docs:
            with JNI_LOCK:
                self._writer.addDocument(self._document(doc_id, payload, metadata))
            count += 1
        return count

    def delete(self, ids: Sequence[str]) -> None:
        # updateDocuments(term, []) deletes by term; deleteDocuments(Term...) is ambiguous to pyjnius.
        term = self._j["Term"]
        for doc_id in ids:
            with JNI_LOCK:
                self._writer.updateDocuments(term("id", doc_id), self._j["ArrayList"]())

    def deleted_fraction(self) -> float:
        """Share of the index's documents that are deleted but still in its segments (and its BM25 statistics)."""
        with JNI_LOCK:
            stats = self._writer.getDocStats()
            return (stats.maxDoc - stats.numDocs) / stats.maxDoc if stats.maxDoc else 0.0

    def merge_deletes(self) -> None:
        """Rewrite segments with deletions, so term statistics count live documents only."""
        with JNI_LOCK:
            self._writer.forceMergeDeletes(False)  # merges run on Lucene's threads, not under our lock
        while True:
            with JNI_LOCK:
                if not self._writer.hasPendingMerges():
                    break
            time.sleep(0.01)
        with JNI_LOCK:
            self._writer.waitForMerges()  # the running ones

    def open_reader(self) -> Any:
        """A point-in-time reader that sees every change so far, committed or not (NRT)."""
        with JNI_LOCK:
            return self._j["DirectoryReader"].open(self._writer)

    def commit(self, seq: int) -> list[str]:
        """Make every change durable with ``seq`` in the commit's user data; returns the commit's files."""
        with JNI_LOCK:
            data = self._j["HashMap"]()
            data.put(SEQ_KEY, str(seq))
            self._writer.setLiveCommitData(data.entrySet())
            self._writer.commit()
            reader = self._j["DirectoryReader"].open(self._directory)
            try:
                return sorted(str(f) for f in reader.getIndexCommit().getFileNames().toArray())
            finally:
                reader.close()

    def committed_seq(self) -> int:
        return committed_seq(self.index_dir)

    def close(self) -> None:
        with JNI_LOCK:
            try:
                self._writer.close()
            finally:
                self._directory.close()


def write_new_index(index_dir: Path, kind: Kind, docs: Iterable[tuple[str, Any, Mapping[str, Any]]],
                    doc_vectors: bool = True, ram_buffer_mb: float = 16.0) -> int:
    """A new committed index (seq 0) in ``index_dir`` holding ``docs``, set up as a batch build sets it up and
    left unlocked; returns how many documents it holds."""
    writer = LuceneWriter(index_dir, kind, create=True, doc_vectors=doc_vectors, ram_buffer_mb=ram_buffer_mb)
    try:
        count = writer.add(docs)
        writer.commit(0)
    finally:
        writer.close()
    (index_dir / "write.lock").unlink(missing_ok=True)
    return count


def committed_seq(index_dir: Path) -> int:
    """The ``seq`` recorded by the last commit (0 for a batch-built index)."""
    j = _jclasses()
    with JNI_LOCK:
        directory = j["FSDirectory"].open(j["Paths"].get(str(Path(index_dir).resolve())))
        try:
            reader = j["DirectoryReader"].open(directory)
            try:
                value = reader.getIndexCommit().getUserData().get(SEQ_KEY)
            finally:
                reader.close()
        finally:
            directory.close()
    return int(value) if value else 0
