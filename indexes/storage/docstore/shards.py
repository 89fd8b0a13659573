"""Sharded indexes on disk: which shard owns a document, where shards live, and their documents as one store.

    NAME@STAMP/manifest.json          the index's manifest: ``shards`` lists the shard folders (each
                                      shard's manifest records and checks its own files)
    NAME@STAMP/shards/000/ ...        one complete index per shard (manifest, docs.sqlite, bm25/, ...)

A document belongs to shard ``blake2b-64(_id) mod S``: stable across processes, platforms and Python
versions (unlike ``hash()``), so an upsert or a delete finds its shard without asking the others. An
index without ``shards`` is today's single-folder layout, which is what ``S = 1`` builds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from indexes.storage.docstore.corpus import Document
from indexes.storage.docstore.store import DocStore

SHARDS_DIR = "shards"


def shard_of(doc_id: str, count: int) -> int:
    """The shard that owns ``doc_id`` among ``count`` shards."""
    if count <= 1:
        return 0
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def positions_by_shard(ids: Sequence[str], count: int) -> dict[int, list[int]]:
    """The positions of ``ids`` grouped by the shard that owns each (a write split across shards)."""
    out: dict[int, list[int]] = {}
    for position, doc_id in enumerate(ids):
        out.setdefault(shard_of(doc_id, count), []).append(position)
    return out


def shard_folder(index_folder: Path, shard: int) -> Path:
    return index_folder / SHARDS_DIR / f"{shard:03d}"


class ShardedStore:
    """The shards' document stores read as one: a lookup by id goes to the owning shard only.

    ``seqs`` pins each shard's store at that shard's point in time (None: its live rows)."""

    def __init__(self, stores: Sequence[DocStore], seqs: Sequence[int | None] | None = None) -> None:
        self.stores = list(stores)
        self.seqs = list(seqs) if seqs is not None else [None] * len(self.stores)

    def get(self, ids: Sequence[str], seq: int | None = None) -> dict[str, Document]:
        """``seq`` is ignored: each shard has its own, fixed at open."""
        by_shard: dict[int, list[str]] = {}
        for doc_id in ids:
            by_shard.setdefault(shard_of(doc_id, len(self.stores)), []).append(doc_id)
        out: dict[str, Document] = {}
        for shard, wanted in by_shard.items():
            out.update(self.stores[shard].get(wanted, self.seqs[shard]))
        return out

    def close(self) -> None:
        for store in self.stores:
            store.close()
