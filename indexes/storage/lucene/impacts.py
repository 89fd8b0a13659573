"""Impact indexes written by the project's Java writer (``java/src/hybrid/lucene``), for every path that writes
impacts: batch builds (one index or a shard's, local or in a Ray task) and live upserts (``index add``, the API).

Why: Anserini's ``JsonVectorCollection`` spells each ``{term: impact}`` out as a text repeating every term
``impact`` times, and Lucene analyzes every repetition (19,150 tokens for 401 postings a document on the
resampled corpus). The Java writer hands Lucene each term once with its impact as the frequency, and builds on
several threads in the documents' order (``ImpactBuild``'s comment says how). Same fields, terms, frequencies,
norms and document order as Anserini's path (``tests/integration/test_impact_writer.py`` compares them term by
term), so scores and rankings are unchanged. Anserini's path stays in :mod:`indexes.storage.lucene.backend`
(``build_impact_anserini``) for that comparison and the benchmark only.

Documents cross as JSON lines, Anserini's vector format (``{"id": ..., "vector": {term: impact}}``): a vectors
file's own bytes where the build reads one, ``orjson`` where Python holds the vectors; metadata as one line of
``[["s", field, keyword] | ["d", field, number], ...]`` per document (:func:`metadata_line`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from indexes.storage.lucene.filters import metadata_fields
from retrieval.core.errors import HybridError
from retrieval.core.jvm import JNI_LOCK, ensure_pyserini

RAM_BUFFER_MB = 1024.0  # Lucene's indexing memory for a build, shared by its writers
POLL_SECONDS = 0.005


class ImpactInputError(HybridError, ValueError):
    """A document the impact writer refuses (bad JSON, a term Lucene would split, an impact out of range)."""


class ImpactWriterError(HybridError, RuntimeError):
    """The Java writer is missing or failed for a reason of the machine's (disk, memory), not the input's."""


def _java() -> dict[str, Any]:
    ensure_pyserini()
    from jnius import autoclass

    try:
        return {"Build": autoclass("hybrid.lucene.ImpactBuild"), "Documents": autoclass("hybrid.lucene.ImpactDocuments"),
                "Similarity": autoclass("io.anserini.search.similarity.ImpactSimilarity")}
    except Exception:  # JavaException: the class is not on the class path
        raise ImpactWriterError("the impact writer's classes are missing (indexes/storage/lucene/java/hybrid-lucene.jar"
                                " was not on the JVM's class path when it started); run 'make jar' and start again"
                                ) from None


def vector_lines(rows: Iterable[tuple[str, Mapping[str, int]]]) -> bytes:
    """JSON vector lines of ``(id, {term: impact})`` rows, each ending in a newline."""
    return b"".join(orjson.dumps({"id": doc_id, "vector": vector}) + b"\n" for doc_id, vector in rows)


def metadata_line(metadata: Mapping[str, Any]) -> bytes:
    """A document's filterable metadata fields as the Java writer adds them (``filters.metadata_fields``)."""
    return orjson.dumps([["s" if kind == "keyword" else "d", name, value]
                         for kind, name, value in metadata_fields(metadata)])


BAD_DOCUMENT = "hybrid.lucene.ImpactDocuments$BadDocument"


def _refusal(exc: Exception) -> HybridError:
    """A Java exception as the error to report: a refused document is the input's fault (exit 2, HTTP 422)."""
    message = str(getattr(exc, "innermessage", None) or exc).strip()
    first = (message.splitlines() or ["failed"])[0][:500]
    if getattr(exc, "classname", None) == BAD_DOCUMENT:
        return ImpactInputError(first)
    return ImpactWriterError(f"impact indexing failed: {first}")


def _failure(build: Any) -> HybridError | None:
    """The build's first failure (its threads'), if any, as the error to report."""
    with JNI_LOCK:
        message = build.failureMessage()
        bad_input = bool(build.badInput()) if message else False
    if not message:
        return None
    return ImpactInputError(message[:500]) if bad_input else ImpactWriterError(f"impact indexing failed: {message[:500]}")


@dataclass
class Chunk:
    """Documents for :class:`ImpactBuilder`, in store order: JSON vector ``lines``, or the byte ``ranges`` of ``file``
    that hold them (Java reads those itself); ``fields``: one metadata line per document, or None."""

    count: int
    lines: bytes | None = None
    file: Path | None = None
    ranges: Sequence[tuple[int, int]] = ()
    fields: bytes | None = None


class ImpactBuilder:
    """One batch build of a new impact index in ``index_dir`` (``work_dir``: an empty scratch folder).

    :meth:`add` and :meth:`add_file` queue a chunk of documents (in store order) and return at once unless
    ``threads + 1`` chunks are already waiting, so the caller prepares the next chunk while Java indexes; with
    ``matrix`` (a folder), Java also writes each chunk's impacts there as one part of the in-memory impact matrix.
    """

    def __init__(self, index_dir: Path, work_dir: Path, doc_vectors: bool, threads: int,
                 matrix: Path | None = None, ram_buffer_mb: float = RAM_BUFFER_MB) -> None:
        self._java = _java()
        self.threads = max(1, threads)
        self.work = Path(work_dir)
        self.work.mkdir(parents=True, exist_ok=True)
        self._rows = 0
        self.seconds = {"submit": 0.0, "wait": 0.0, "finish": 0.0}
        self._build = self._java["Build"](str(Path(index_dir).resolve()), str(self.work.resolve()), doc_vectors,
                                          str(Path(matrix).resolve()) if matrix is not None else None,
                                          self.threads, float(ram_buffer_mb), self._java["Similarity"]())

    def add_chunk(self, chunk: Chunk) -> None:
        if chunk.file is not None:
            self.add_file(chunk.file, chunk.ranges, chunk.count, chunk.fields)
        else:
            self.add(chunk.lines or b"", chunk.count, chunk.fields)

    def add(self, lines: bytes, count: int, fields: bytes | None = None) -> None:
        """Queue ``count`` documents: their JSON vector lines and, if any, their metadata lines (same order)."""
        self._submit(lambda: self._build.submit(lines, fields, self._rows), count)

    def add_file(self, path: Path, ranges: Sequence[tuple[int, int]], count: int, fields: bytes | None = None) -> None:
        """Queue ``count`` documents whose JSON vector lines are the byte ``ranges`` of ``path``, in that order: Java
        reads them on its own thread."""
        starts, ends = [int(a) for a, _ in ranges], [int(b) for _, b in ranges]
        self._submit(lambda: self._build.submitFile(str(Path(path).resolve()), starts, ends, fields, self._rows), count)

    def _submit(self, submit: Callable[[], Any], count: int) -> None:
        if not count:
            return
        started = time.perf_counter()
        while self._call("pending") > self.threads:
            time.sleep(POLL_SECONDS)
        self._check()
        self.seconds["wait"] += time.perf_counter() - started
        started = time.perf_counter()
        with JNI_LOCK:
            submit()
        self.seconds["submit"] += time.perf_counter() - started
        self._rows += count

    def finish(self) -> dict[str, Any]:
        """Wait for every chunk, then put their segments together in order and commit; returns the Java side's
        summary (documents, postings, segments, CPU seconds per stage) and this side's seconds."""
        started = time.perf_counter()
        while self._call("pending") > 0:
            time.sleep(POLL_SECONDS)
        self._check()
        self.seconds["wait"] += time.perf_counter() - started
        started = time.perf_counter()
        try:
            summary = orjson.loads(self._java["Build"].finishBuild(self._build))  # static: no shared method target
        except Exception as exc:  # JavaException
            raise _failure(self._build) or _refusal(exc) from None
        self.seconds["finish"] += time.perf_counter() - started
        return {**summary, **{f"{k}_s": round(v, 3) for k, v in self.seconds.items()}}

    def close(self) -> None:
        with JNI_LOCK:
            self._build.close()

    def _call(self, method: str) -> Any:
        with JNI_LOCK:  # the method looked up under the lock too: pyjnius binds its target on lookup
            return getattr(self._build, method)()

    def _check(self) -> None:
        failure = _failure(self._build)
        if failure is not None:
            raise failure


def update(writer: Any, docs: Sequence[tuple[str, Mapping[str, int], Mapping[str, Any]]], doc_vectors: bool) -> None:
    """Live writes on an open ``IndexWriter``: replace (or add) each document by id; one with no positive impact is
    only deleted. One Java call for the batch (a static method: no shared pyjnius target, so no JNI lock), which
    checks every document before writing any."""
    java = _java()
    lines = vector_lines((doc_id, vector) for doc_id, vector, _ in docs)
    fields = (b"".join(metadata_line(metadata) + b"\n" for _, _, metadata in docs)
              if any(metadata for _, _, metadata in docs) else None)
    try:
        java["Documents"].update(writer, lines, fields, doc_vectors)
    except Exception as exc:  # JavaException
        raise _refusal(exc) from None


CHUNK_MAX = 50_000  # documents a chunk at most (about 20M postings of SPLADE-tiny documents): one segment each


def chunk_documents(total: int, threads: int) -> int:
    """Documents a chunk: about four chunks a thread, so every thread stays busy to the end, and at most
    :data:`CHUNK_MAX` (each chunk becomes a segment, and a matrix part, of its own)."""
    return max(1_000, min(CHUNK_MAX, -(-total // (4 * max(1, threads)))))


def check_terms(terms: Iterable[str], source: str) -> None:
    """Refuse terms the impact writer would refuse (empty, with whitespace, over 255 characters), before anything
    is written: a model's vocabulary is checked once, when its document encoder loads. ``str.isspace`` holds every
    character Java's ``Character.isWhitespace`` does (and the no-break spaces too: refused here, never split)."""
    for term in terms:
        if not term or len(term.encode("utf-16-le")) > 510 or any(c.isspace() for c in term):  # 255 Java chars
            raise ImpactInputError(f"{source}: term {term[:40]!r} cannot be a Lucene impact term (empty, whitespace "
                                   "or over 255 characters: Anserini's whitespace tokenizer would split it)")

