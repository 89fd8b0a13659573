"""``manifest.json``: what an index folder holds and how it was built, so it can be reproduced."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
RETRIEVERS = ("bm25", "splade", "dense")


class ManifestError(ValueError):
    """A manifest is missing, unreadable, or from an unsupported format version."""


@dataclass
class RetrieverManifest:
    name: str
    model_id: str | None
    weights_sha256: str | None
    parameters: dict[str, Any]
    build_seconds: float
    encode_seconds: float
    index_seconds: float
    size_bytes: int


@dataclass
class Manifest:
    name: str
    created: str
    corpus_path: str
    corpus_sha256: str
    doc_count: int
    retrievers: dict[str, RetrieverManifest] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    docstore_bytes: int = 0
    # Documents left out of every retriever, by reason (e.g. "empty": no title and no text).
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def write(self, folder: Path) -> None:
        tmp = folder / (MANIFEST + ".tmp")
        with tmp.open("w") as handle:
            handle.write(self.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, folder / MANIFEST)

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ManifestError(f"{folder}: not an index (no {MANIFEST})") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{path}: unreadable manifest ({exc})") from None
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ManifestError(f"{path}: format version {version}, this build reads {FORMAT_VERSION}; rebuild the index")
        retrievers = {k: RetrieverManifest(**v) for k, v in data.pop("retrievers", {}).items()}
        return cls(retrievers=retrievers, **data)

    @property
    def size_bytes(self) -> int:
        return self.docstore_bytes + sum(r.size_bytes for r in self.retrievers.values())


def folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
