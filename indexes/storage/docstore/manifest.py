"""``manifest.json``: what an index folder holds and how it was built, so it can be reproduced."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from retrieval.core.errors import ConflictError

# 2: FAISS ids are docnos (IDMap2), the document store keeps row versions; live writes possible.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
# Files that come and go while an index is written to; never part of its recorded contents.
VOLATILE = {"wal.log", "write.lock", "CHECKPOINT", "docs.sqlite-journal", "index.faiss.tmp", MANIFEST + ".tmp"}



def write_atomically(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file, fsynced and renamed: a crash leaves the old file or the new."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)

class ManifestError(ConflictError, ValueError):
    """A manifest is missing, unreadable, or from an unsupported format version."""


@dataclass
class RetrieverManifest:
    """One named retriever of an index: its kind, model and parameters, and what its build cost."""

    name: str
    model_id: str | None
    weights_sha256: str | None
    parameters: dict[str, Any]
    build_seconds: float
    encode_seconds: float
    index_seconds: float
    size_bytes: int
    kind: str = ""  # manifests written before named retrievers have none: the kind was the name
    # Lucene retrievers: the Lucene major version that created the index; None for others and old manifests.
    lucene_major: int | None = None
    # Where the build's time went, seconds by stage (the SPLADE impact writer's: reading, Lucene, matrix, ...).
    stages: dict[str, float] = field(default_factory=dict)
    # Approximate search measured against exact search (indexes/indexing/tuning.py): the parameters that reach the
    # target recall@10, the recall measured, the target, the sample queries and where they came from, and every
    # setting tried. None: nothing approximate to tune (or not tuned yet).
    search_tuning: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.kind = self.kind or self.name


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
    # Documents left out of every retriever, by reason ("empty", "malformed_json", ...): count and examples.
    skipped: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Every file of the index but the manifest: relative path -> [size, sha256].
    files: dict[str, list[Any]] = field(default_factory=dict)
    # The last write batch (seq) this manifest's files include; 0 for an index as built.
    live_seq: int = 0
    # When the last live write was checkpointed (ISO 8601), if any.
    updated: str | None = None
    # The search engine that wrote the Lucene retrievers: lucene_version, pyserini_version, anserini_jar.
    # Empty for indexes without Lucene retrievers and for manifests written before it was recorded.
    engine: dict[str, str] = field(default_factory=dict)
    # Metadata fields filters can use: name -> keyword, number, date or boolean (retrieval.core.fields).
    # Empty for indexes without metadata and for manifests written before filters existed.
    fields: dict[str, str] = field(default_factory=dict)
    # A sharded index (indexes.storage.docstore.shards): its shard folders, each a complete index with its own manifest
    # and file checksums; empty for a single-folder index. Then ``retrievers`` describes the shards' retrievers
    # with sizes and times summed, and ``files`` is empty.
    shards: list[str] = field(default_factory=list)
    # The retrievers' batch build, wall clock (0 for sharded and older manifests): below the sum of their
    # build_seconds when some built beside the others (BM25 on the CPU while the GPU encodes).
    build_wall_seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def write(self, folder: Path) -> None:
        write_atomically(folder / MANIFEST, self.to_json())

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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def is_lucene_segment_file(rel: str) -> bool:
    """A Lucene segment file (``NAME/_3.cfs``, ``NAME/_3_Lucene90_0.doc``): written once, never changed."""
    parts = rel.split("/")
    return len(parts) == 2 and parts[1].startswith("_")


def _index_files(folder: Path) -> list[Path]:
    # Names ending in .tmp are files half-written by an interrupted atomic write (temporary file, then rename).
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.name != MANIFEST and p.name not in VOLATILE and not p.name.endswith(".tmp"))


def checksum_files(folder: Path, only: list[str] | None = None, previous: dict[str, list[Any]] | None = None
                   ) -> dict[str, list[Any]]:
    """Size and sha256 of every file (or of ``only``); Lucene files are write-once, so an entry of
    ``previous`` with the same Lucene file name and size is reused instead of hashed again."""
    paths = [folder / rel for rel in only] if only is not None else _index_files(folder)
    out: dict[str, list[Any]] = {}
    for path in paths:
        rel = str(path.relative_to(folder))
        size = path.stat().st_size
        old = (previous or {}).get(rel)
        reusable = is_lucene_segment_file(rel)
        out[rel] = old if old and reusable and old[0] == size else [size, _sha256(path)]
    return out


def verify_files(folder: Path, manifest: Manifest, mode: str = "full") -> None:
    """Refuse an index whose files differ from what its build recorded (``full``: sizes and sha256)."""
    if mode == "off":
        return
    if manifest.shards:  # each shard records and checks its own files (live writes change them shard by shard)
        for rel in manifest.shards:
            verify_files(folder / rel, Manifest.read(folder / rel), mode)
        return
    if not manifest.files:
        raise ManifestError(f"index {manifest.name!r} records no file checksums; rebuild it")
    present = {str(p.relative_to(folder)) for p in _index_files(folder)}
    missing = sorted(set(manifest.files) - present)
    extra = sorted(present - set(manifest.files))
    if manifest.live_seq:
        # Lucene may leave files of merged-away segments that open readers held; its next writer removes them.
        extra = [e for e in extra if not (is_lucene_segment_file(e) or e.split("/")[-1].startswith("segments_"))]
    if missing or extra:
        raise ManifestError(f"index {manifest.name!r} does not match its manifest: "
                            f"{'missing ' + missing[0] if missing else 'unexpected ' + extra[0]}")
    for rel, (size, sha) in manifest.files.items():
        path = folder / rel
        if path.stat().st_size != size or (mode == "full" and _sha256(path) != sha):
            raise ManifestError(f"index {manifest.name!r} does not match its manifest: {rel} changed")


def folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
