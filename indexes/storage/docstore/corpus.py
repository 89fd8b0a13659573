"""Reading BEIR-format corpora (JSONL, optionally gzip) with errors that name the line to fix."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from retrieval.core.errors import HybridError
from retrieval.core.java_text import UnsafeTextError, checked_key, checked_metadata, safe_text


class CorpusError(HybridError, ValueError):
    """The corpus cannot be indexed; the message names the file and line to fix."""


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Every document is made safe where it is made (:mod:`retrieval.core.java_text`): title and text cleaned,
        an id or metadata that cannot be stored as sent refused (:class:`UnsafeTextError`, a 422)."""
        checked_key(self.id, "_id")
        if self.metadata:
            checked_metadata(self.metadata)
        object.__setattr__(self, "title", safe_text(self.title))
        object.__setattr__(self, "text", safe_text(self.text))

    @classmethod
    def stored(cls, id: str, title: str, text: str, metadata: dict[str, Any]) -> Document:
        """A document as the store or the write-ahead log holds it: checked when it was written, not again (an
        index written by an older version keeps its ids as they are)."""
        doc = object.__new__(cls)
        for name, value in (("id", id), ("title", title), ("text", text), ("metadata", metadata)):
            object.__setattr__(doc, name, value)
        return doc

    @property
    def contents(self) -> str:
        """The text every retriever sees: title and body, as Pyserini's BEIR "flat" indexes do."""
        return f"{self.title} {self.text}".strip() if self.title else self.text


def resolve_corpus_file(path: Path) -> Path:
    """Accept a JSONL(.gz) file or a BEIR dataset folder holding corpus.jsonl(.gz)."""
    if path.is_dir():
        for name in ("corpus.jsonl", "corpus.jsonl.gz"):
            if (path / name).is_file():
                return path / name
        raise CorpusError(f"{path}: folder has no corpus.jsonl or corpus.jsonl.gz (BEIR layout expected)")
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder")
    return path


def open_text_lines(path: Path) -> BinaryIO:
    raw = path.open("rb")
    if path.suffix == ".gz":
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    return raw


def _field(obj: dict[str, Any], name: str, where: str) -> str:
    value = obj.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CorpusError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    return value


class Skipped:
    """Counts of documents left out, by reason, with the first few places for the warning and manifest."""

    EXAMPLES = 20

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < self.EXAMPLES:
            examples.append(where)

    def as_dict(self) -> dict[str, dict[str, object]]:
        return {r: {"count": n, "examples": self.examples[r]} for r, n in self.counts.items()}

    def __bool__(self) -> bool:
        return bool(self.counts)


def _parse_line(raw: bytes, where: str, seen: set[str]) -> tuple[str, Document | str]:
    """(reason, message) for a bad line, or ("", Document)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8", f"{where}: line is not valid UTF-8"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return "malformed_json", f"{where}: malformed JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(obj, dict):
        return "not_an_object", f"{where}: each line must be a JSON object, got {type(obj).__name__}"
    doc_id = obj.get("_id")
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    if not isinstance(doc_id, str) or not doc_id.strip():
        return "missing_id", f"{where}: missing or empty '_id' (a non-empty string is required)"
    if doc_id in seen:
        return "duplicate_id", f"{where}: duplicate _id {doc_id!r}"
    fields = {}
    for name in ("title", "text"):
        value = obj.get(name, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            return "bad_field", f"{where}: field {name!r} must be a string, got {type(value).__name__}"
        fields[name] = value
    # BEIR's "metadata" object is the document's metadata, as the API's upserts send it; other keys join it.
    nested = obj.get("metadata")
    metadata = dict(nested) if isinstance(nested, dict) else {}
    metadata.update((k, v) for k, v in obj.items()
                    if k not in ("_id", "title", "text") and not (k == "metadata" and isinstance(v, dict)))
    try:
        doc = Document(doc_id, fields["title"], fields["text"], metadata)
    except UnsafeTextError as exc:
        return "unsafe_text", f"{where}: {exc}"
    seen.add(doc_id)
    return "", doc


def iter_documents(path: Path, on_error: str = "fail", skipped: Skipped | None = None) -> Iterator[Document]:
    """Yield documents in file order. ``on_error="fail"`` stops at the first bad line with a
    CorpusError naming it; ``"skip"`` leaves bad lines out and counts them in ``skipped``."""
    if on_error not in ("fail", "skip"):
        raise CorpusError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    file = resolve_corpus_file(path)
    skipped = skipped if skipped is not None else Skipped()
    seen: set[str] = set()
    count = 0
    with open_text_lines(file) as handle:
        try:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                where = f"{file.name}:{number}"
                reason, parsed = _parse_line(raw, where, seen)
                if reason:
                    if on_error == "fail":
                        raise CorpusError(f"{file}:{number}{str(parsed)[len(where):]}")
                    skipped.add(reason, where)
                    continue
                count += 1
                yield parsed  # type: ignore[misc]
        except (EOFError, OSError) as exc:  # truncated or corrupt gzip stream
            if on_error == "fail":
                raise CorpusError(f"{file}: cannot read compressed file ({exc})") from None
            skipped.add("truncated_file", f"{file.name}: {exc}")
    if count == 0:
        raise CorpusError(f"{file}: corpus is empty (no valid documents)")


def file_sha256(path: Path) -> str:
    """sha256 of the uncompressed content, so a corpus and its .gz copy are the same corpus
    (of the raw bytes where a damaged .gz cannot be read to its end)."""
    file = resolve_corpus_file(path)
    digest = hashlib.sha256()
    try:
        with open_text_lines(file) as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    except (EOFError, OSError):
        digest = hashlib.sha256(b"raw:")
        with file.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def read_jsonl_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Plain JSONL reader for queries files; yields (line number, object)."""
    with open_text_lines(path) as handle:
        for number, raw in enumerate(io.TextIOWrapper(handle, encoding="utf-8"), start=1):
            if raw.strip():
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise CorpusError(f"{path}:{number}: malformed JSON ({exc.msg})") from None
                if not isinstance(obj, dict):
                    raise CorpusError(f"{path}:{number}: each line must be a JSON object")
                yield number, obj
