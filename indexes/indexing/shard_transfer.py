"""Index folders moved between the nodes of a Ray cluster that share no file system.

A shard is built by a Ray task in a folder of that task's node and comes back to the driver as one packed
object; a serving replica fetches the shard it serves onto its own node, from the Ray object store or from a URI
that ``pyarrow.fs`` opens (``file://``, ``s3://``, ``gs://``, ``hdfs://``). Either way the shard is unpacked into
a folder of its own (``.partial`` first, renamed when complete) and every file is checked against the sizes and
SHA-256 sums its manifest recorded before anything opens it: a truncated or altered copy is refused, never served.

What travels is what the manifest lists (and the manifest): a shard as of its last checkpoint; writes still only
in a write-ahead log stay where they were made.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexes.storage.docstore.manifest import MANIFEST, Manifest, ManifestError, verify_files
from retrieval.core.errors import HybridError


class ShardTransferError(HybridError, RuntimeError):
    """A shard that could not be fetched whole; the message says which file and why."""

    http_status = 503


def listed_files(folder: Path) -> list[str]:
    """The manifest and every file it records, relative to ``folder``."""
    return [MANIFEST, *sorted(Manifest.read(folder).files)]


def pack(folder: Path, files: list[str] | None = None) -> bytes:
    """``files`` of ``folder`` (default: its manifest and what it lists) as one uncompressed tar."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for rel in files if files is not None else listed_files(folder):
            tar.add(folder / rel, arcname=rel, recursive=False)
    return buffer.getvalue()


def unpack(data: bytes, target: Path) -> Manifest:
    """``data`` (from :func:`pack`) into the new folder ``target``, checked against its manifest; returns it."""
    partial = target.with_name(target.name + f".partial-{uuid.uuid4().hex[:8]}")
    partial.mkdir(parents=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            tar.extractall(partial, filter="data")  # no absolute paths, no links out of the folder
        manifest = checked(partial)
        os.replace(partial, target)
        return manifest
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def checked(folder: Path) -> Manifest:
    """The manifest of ``folder`` once every file it lists has its recorded size and SHA-256."""
    try:
        manifest = Manifest.read(folder)
        verify_files(folder, manifest, "full")
    except ManifestError as exc:
        raise ShardTransferError(f"a copied shard does not match its manifest ({exc}); refusing to serve it") from None
    return manifest


def fetch_uri(uri: str, target: Path) -> Manifest:
    """The index folder at ``uri`` (its manifest and every file it lists) copied into the new folder ``target``
    through ``pyarrow.fs``, checked; returns its manifest."""
    try:
        from pyarrow import fs
    except ImportError:
        raise ShardTransferError("fetching shards from a URI needs pyarrow (installed with the [ray] extra)") from None
    try:
        filesystem, base = fs.FileSystem.from_uri(uri.rstrip("/"))
    except Exception as exc:  # ArrowInvalid: an unknown scheme, bad credentials
        raise ShardTransferError(f"cannot open {uri}: {str(exc).splitlines()[0]}") from None
    partial = target.with_name(target.name + f".partial-{uuid.uuid4().hex[:8]}")
    partial.mkdir(parents=True)
    try:
        _copy(filesystem, f"{base}/{MANIFEST}", partial / MANIFEST, uri)
        for rel in Manifest.read(partial).files:
            (partial / rel).parent.mkdir(parents=True, exist_ok=True)
            _copy(filesystem, f"{base}/{rel}", partial / rel, uri)
        manifest = checked(partial)
        os.replace(partial, target)
        return manifest
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _copy(filesystem: Any, source: str, target: Path, uri: str) -> None:
    try:
        with filesystem.open_input_stream(source) as stream, target.open("wb") as out:
            while block := stream.read(1 << 22):
                out.write(block)
    except OSError as exc:
        raise ShardTransferError(f"cannot read {source} of {uri}: {str(exc).splitlines()[0]}") from None


@dataclass
class ShardSource:
    """Where a serving replica gets its shard when the cluster shares no disk: ``packed`` (a one-element list
    holding the Ray object reference of :func:`pack`'s bytes: in a list, so that Ray hands the reference to the
    replica instead of the bytes to its constructor) or ``uri`` (the shard's folder, for :func:`fetch_uri`)."""

    name: str
    packed: list[Any] | None = None
    uri: str | None = None

    def fetch(self, get: Any = None) -> Path:
        """The shard in a new folder of this node's temporary space (``get`` is ``ray.get``)."""
        base = Path(tempfile.gettempdir()) / "hybrid-shards"
        base.mkdir(parents=True, exist_ok=True)
        target = base / f"{self.name}-{uuid.uuid4().hex[:8]}"
        if self.uri is not None:
            fetch_uri(self.uri, target)
        else:
            assert self.packed is not None and get is not None
            unpack(get(self.packed[0]), target)
        return target
