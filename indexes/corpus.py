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


class CorpusError(ValueError):
    """The corpus cannot be indexed; the message names the file and line to fix."""


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

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


def iter_documents(path: Path) -> Iterator[Document]:
    """Yield documents in file order; stop with a CorpusError at the first bad line."""
    file = resolve_corpus_file(path)
    seen: set[str] = set()
    count = 0
    with open_text_lines(file) as handle:
        try:
            for number, raw in enumerate(handle, start=1):
                where = f"{file}:{number}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise CorpusError(f"{where}: line is not valid UTF-8") from None
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CorpusError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from None
                if not isinstance(obj, dict):
                    raise CorpusError(f"{where}: each line must be a JSON object, got {type(obj).__name__}")
                doc_id = obj.get("_id")
                if isinstance(doc_id, int) and not isinstance(doc_id, bool):
                    doc_id = str(doc_id)
                if not isinstance(doc_id, str) or not doc_id.strip():
                    raise CorpusError(f"{where}: missing or empty '_id' (a non-empty string is required)")
                if doc_id in seen:
                    raise CorpusError(f"{where}: duplicate _id {doc_id!r}")
                seen.add(doc_id)
                title = _field(obj, "title", where)
                text = _field(obj, "text", where)
                metadata = {k: v for k, v in obj.items() if k not in ("_id", "title", "text")}
                count += 1
                yield Document(doc_id, title, text, metadata)
        except (EOFError, OSError) as exc:  # truncated or corrupt gzip stream
            raise CorpusError(f"{file}: cannot read compressed file ({exc})") from None
    if count == 0:
        raise CorpusError(f"{file}: corpus is empty (no documents)")


def file_sha256(path: Path) -> str:
    """sha256 of the uncompressed content, so a corpus and its .gz copy are the same corpus."""
    digest = hashlib.sha256()
    with open_text_lines(resolve_corpus_file(path)) as handle:
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
