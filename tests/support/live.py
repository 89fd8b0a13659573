"""Writable copies of the session's index, and corpus rows as documents."""

from __future__ import annotations

import shutil
from pathlib import Path

from indexes.storage.docstore.corpus import Document
from indexes.storage.docstore.layout import IndexRoot


def copy_index(index_root: Path, tmp_path: Path, name: str = "live") -> tuple[IndexRoot, Path]:
    """A private, writable copy of the session's 60-document index."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(IndexRoot(index_root).resolve("small"), root / name)
    return IndexRoot(root), root / name


def doc(row: dict) -> Document:
    return Document(row["_id"], row["title"], row["text"])
