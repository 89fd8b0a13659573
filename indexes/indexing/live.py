"""A live index: upserts and deletes reach every retriever at once while searches go on.

Write path (one writer per index at a time, across processes too):

    encode (no lock held) -> write-ahead log, fsynced -> document store (one transaction)
    -> Lucene BM25 and impact writers -> FAISS append -> new view published -> acknowledged

A *view* is a :class:`~retrieval.search.pipeline.Searcher` pinned at one ``seq``: NRT Lucene readers taken
after the write, the FAISS docnos live at that seq, and the document store read at that seq. A new
view replaces the old one in one assignment, so a search sees all of a write batch or none of it;
views are reference counted and a view's Lucene readers are released when its last search ends.

A checkpoint saves the FAISS index, commits both Lucene indexes (with ``seq`` in the commit data),
rewrites the manifest with fresh checksums and empties the log; it runs when the log passes
``checkpoint_bytes``, before a snapshot, and when the index is closed. Opening an index whose log is
not empty (a crash) replays the records each component had not yet persisted.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from indexes.indexing.views import IndexFailedError, Views
from indexes.kinds import get_kind
from indexes.kinds.base import Component, ViewState, WriteBatch
from indexes.storage.docstore.corpus import Document
from indexes.storage.docstore.layout import IndexRoot, fsync_path
from indexes.storage.docstore.manifest import MANIFEST, Manifest, checksum_files, folder_size, verify_files
from indexes.storage.docstore.store import DocStore
from indexes.storage.docstore.wal import WriteAheadLog
from retrieval.core.disk import NO_SPACE, DiskFullError, disk_full, ensure_free, is_disk_full
from retrieval.core.errors import HybridError
from retrieval.core.fields import FieldSchema
from retrieval.core.gc_tuning import freeze_loaded, thaw
from retrieval.core.java_text import checked_value
from retrieval.core.options import OpenOptions
from retrieval.search.pipeline import Searcher, load_encoders, open_components, open_searchers

log = logging.getLogger("hybrid.live")
MARKER = "CHECKPOINT"
SNAPSHOTS = ".snapshots"
DISK_FULL = "the disk is full"


class LiveWriteError(HybridError, ValueError):
    """A write the index cannot take as sent; the message says what to fix."""


@dataclass
class WriteResult:
    seq: int
    upserted: int = 0
    deleted: int = 0
    missing: list[str] = field(default_factory=list)
    encode_ms: float = 0.0
    apply_ms: float = 0.0


class LiveIndex:
    """One index open for searching and writing; see the module docstring for the guarantees."""

    def __init__(self, folder: Path, manifest: Manifest, store: DocStore, encoders: dict[str, Any],
                 components: dict[str, Component], options: OpenOptions, root: IndexRoot | None, name: str) -> None:
        self.folder = folder
        self.manifest = manifest
        self.name = name
        self.store = store
        self.encoders = encoders
        self.options = options
        self._components = components
        self._document_encoders: dict[str, Any] | None = None  # loaded at the first upsert
        self._root = root
        self._wal = WriteAheadLog(folder)
        self._write_lock = threading.RLock()
        self._views = Views(name)
        self._writing = False  # the components' writers are open
        self._held = ExitStack()
        self._seq = store.seq
        self._bound = store.next_docno()
        self._bitmap: np.ndarray | None = store.live_bitmap(self._seq) if store.has_versions() else None
        self._failed: str | None = None
        self._closed = False

    # --- opening -------------------------------------------------------------------------------------

    @classmethod
    def open(cls, folder: Path, options: OpenOptions | None = None, *, root: IndexRoot | None = None,
             **overrides: Any) -> LiveIndex:
        """Open (and, after a crash, recover) an index folder. ``root`` enables the per-name write lock;
        ``overrides`` replace single options (``device="cpu"``)."""
        options = replace(options or OpenOptions(), **overrides)
        folder = Path(folder).resolve()
        manifest = Manifest.read(folder)
        dirty = WriteAheadLog(folder).size() > 0 or (folder / MARKER).exists()
        if dirty:
            log.warning("index %s has write-ahead records not yet checkpointed; replaying them", manifest.name)
        else:
            verify_files(folder, manifest, options.verify)
        store = DocStore.open(folder, writable=True)
        try:
            encoders = load_encoders(manifest, list(manifest.retrievers), options.device)
            components = open_components(folder, manifest, list(manifest.retrievers), options)
        except BaseException:
            store.close()
            raise
        name = folder.name.split("@", 1)[0] if "@" in folder.name else folder.name
        live = cls(folder, manifest, store, encoders, components, options, root, name)
        try:
            if dirty:
                live._recover()
            live._publish()
            with live.view() as searcher:
                searcher.warm_modes()
        except BaseException:
            live.close(checkpoint=False)
            raise
        freeze_loaded()
        return live

    # --- reading -------------------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        return self._seq

    @property
    def doc_count(self) -> int:
        return self.manifest.doc_count

    @property
    def retrievers(self) -> list[str]:
        return list(self.manifest.retrievers)

    def view(self) -> AbstractContextManager[Searcher]:
        """The current point-in-time searcher, held for the duration of the block."""
        return self._views.hold()

    def _publish(self) -> None:
        """Make everything written so far visible to new searches, in one step."""
        searchers = open_searchers(self._components, self.encoders, self.store, ViewState(self._bound, self._bitmap),
                                   self.options.batch_size)
        self._views.publish(Searcher(self.folder, self.manifest, self.store, searchers, self.options, seq=self._seq,
                                     owns_store=False), self._seq)

    # --- writing -------------------------------------------------------------------------------------

    def _check_writable(self, doing: str = "writes") -> None:
        if self._closed:
            raise IndexFailedError(f"index {self.name!r} is closed")
        if self._failed:  # 507 when the disk filled up, else 503: either way a reload (reopen) replays the log
            error = DiskFullError if self._failed == DISK_FULL else IndexFailedError
            raise error(f"index {self.name!r} refuses {doing} after a failed write ({self._failed}); reload it"
                        + (" once there is space" if error is DiskFullError else ""))

    def _open_writers(self) -> None:
        if self._writing:
            return
        if self._root is not None:
            self._held.enter_context(self._root.writer_lock(self.name, self.folder))
        try:
            for component in self._components.values():
                component.open_writer()
        except BaseException:
            self._close_writers()
            self._held.close()
            raise
        self._writing = True

    def _close_writers(self) -> None:
        for component in self._components.values():
            component.close_writer()
        self._writing = False

    @staticmethod
    def check_documents(docs: Sequence[Document]) -> None:
        seen: set[str] = set()
        for i, doc in enumerate(docs):
            if not doc.id:
                raise LiveWriteError(f"document {i} has an empty _id")
            if doc.id in seen:
                raise LiveWriteError(f"_id {doc.id!r} appears twice in one batch; send each document once")
            seen.add(doc.id)
            if not doc.contents.strip():
                raise LiveWriteError(f"document {doc.id!r} has no title and no text; there is nothing to index")

    def upsert(self, docs: Sequence[Document]) -> WriteResult:
        """Add documents, replacing any live document with the same ``_id``; durable when it returns."""
        self._check_writable()
        self.check_documents(docs)
        if not docs:
            return WriteResult(seq=self._seq)
        started = time.perf_counter()
        if self._document_encoders is None:
            self._document_encoders = load_encoders(self.manifest, self.retrievers, self.options.device, role="document")
        texts = [d.contents for d in docs]
        vectors = {}
        for name, encoder in self._document_encoders.items():
            entry = self.manifest.retrievers[name]
            payload = get_kind(entry.kind).encode(encoder, entry, texts, self.options.batch_size)
            if payload is not None:
                vectors[name] = payload
        encoded = time.perf_counter()
        with self._write_lock:
            self._check_writable()
            ensure_free(self.folder, self.options.min_free_disk_mb, "the write")
            # Metadata that does not fit a recorded field type is refused before anything is written.
            fields = FieldSchema(self.manifest.fields).accept((d.id, d.metadata) for d in docs).as_dict()
            self._open_writers()
            if fields != self.manifest.fields:
                self.manifest = replace(self.manifest, fields=fields)  # the new view's filters know new fields
            seq = self._seq + 1
            replaced = self.store.live_docnos([d.id for d in docs])
            record: dict[str, Any] = {
                "seq": seq, "op": "upsert", "first": self._bound, "replaced": sorted(replaced.values()),
                "docs": [[d.id, d.title, d.text, d.metadata] for d in docs], "vectors": vectors,
            }
            self._write(record)
            return WriteResult(seq=seq, upserted=len(docs), encode_ms=(encoded - started) * 1000,
                               apply_ms=(time.perf_counter() - encoded) * 1000)

    def delete(self, ids: Sequence[str]) -> WriteResult:
        """Remove documents by ``_id``; ids the index does not hold are reported, not an error."""
        self._check_writable()
        started = time.perf_counter()
        unique = [checked_value(i, "_id") for i in dict.fromkeys(ids)]
        with self._write_lock:
            self._check_writable()
            found = self.store.live_docnos(unique)
            missing = [i for i in unique if i not in found]
            if not found:
                return WriteResult(seq=self._seq, missing=missing)
            ensure_free(self.folder, self.options.min_free_disk_mb, "the delete")
            self._open_writers()
            seq = self._seq + 1
            record = {"seq": seq, "op": "delete", "ids": sorted(found), "docnos": sorted(found.values())}
            self._write(record)
            return WriteResult(seq=seq, deleted=len(found), missing=missing,
                               apply_ms=(time.perf_counter() - started) * 1000)

    def _write(self, record: dict[str, Any]) -> None:
        try:
            wal_bytes = self._wal.append(record)  # a failed append is cut back off: nothing was written
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(exc, f"logging write {record['seq']} to index {self.name!r}",
                                "nothing of it was written; free space and retry") from None
            raise
        try:
            self._apply(record, store=True, components=list(self._components))
            added, deleted = self._changes(record)
            self._seq = record["seq"]
            self._bound = max(self._bound, added[-1] + 1) if added else self._bound
            self._bitmap = self._next_bitmap(added, deleted)
            self.manifest = replace(self.manifest, doc_count=self.manifest.doc_count + len(added) - len(deleted))
            self._publish()
        except BaseException as exc:
            # The log holds the record, so reopening the index finishes this write; until then, no more writes.
            self._failed = DISK_FULL if is_disk_full(exc) else f"{type(exc).__name__}: {exc}"[:300]
            if self._failed == DISK_FULL:  # a known condition: one line, no traceback
                log.error("write %s to index %s failed half-way: %s", record["seq"], self.name, self._failed)
            else:
                log.exception("write %s to index %s failed half-way", record["seq"], self.name)
            if self._failed == DISK_FULL:
                raise DiskFullError(f"{NO_SPACE} while applying write {record['seq']} to index {self.name!r}; it is "
                                    "in the write-ahead log and is applied when the index is reopened (reload it once "
                                    "there is space)") from None
            raise IndexFailedError(f"index {self.name!r}: write failed half-way ({self._failed}); "
                                   "it is applied when the index is reopened") from None
        if wal_bytes > self.options.checkpoint_bytes:
            try:  # the write is durable (logged) and visible: a checkpoint that fails does not undo it
                self._checkpoint_locked()
            except Exception as exc:  # noqa: BLE001 - kept in the log; the next checkpoint (or reopen) retries
                log.error("index %s: checkpoint after write %s failed (%s); the write-ahead log keeps every write",
                          self.name, record["seq"], str(exc).splitlines()[0][:300])

    @staticmethod
    def _changes(record: dict[str, Any]) -> tuple[list[int], list[int]]:
        if record["op"] == "upsert":
            return list(range(record["first"], record["first"] + len(record["docs"]))), record["replaced"]
        return [], record["docnos"]

    def _next_bitmap(self, added: list[int], deleted: list[int]) -> np.ndarray:
        top = self._bound
        if self._bitmap is None:
            bits = np.ones(top, dtype=bool)
        else:
            bits = np.unpackbits(self._bitmap, bitorder="little")[:top]
            bits = np.concatenate([bits, np.zeros(top - len(bits), dtype=bits.dtype)]).astype(bool)
            bits[added] = True
        bits[deleted] = False
        return np.packbits(bits, bitorder="little")

    def _apply(self, record: dict[str, Any], store: bool, components: list[str]) -> None:
        """Redo one record in the document store (if ``store``) and the named components."""
        added, deleted = self._changes(record)
        if record["op"] == "upsert":
            docs = [Document.stored(i, title, text, metadata) for i, title, text, metadata in record["docs"]]
            deleted_ids: list[str] = []
            # Records written before named retrievers kept the vectors under the retriever's name.
            vectors = record.get("vectors") or {k: record[k] for k in ("splade", "dense") if record.get(k) is not None}
        else:
            docs, deleted_ids, vectors = [], record["ids"], {}
        if store:
            self.store.apply(record["seq"], list(zip(added, docs)), deleted)
        for name in components:
            batch = WriteBatch(record["seq"], docs, added, deleted_ids, deleted, vectors.get(name))
            self._components[name].apply(batch)

    def _recover(self) -> None:
        with self._write_lock:
            self._open_writers()
            store_seq = self.store.seq
            # Components that know the seq they hold get only newer records; the others (FAISS) skip by docno.
            done = {name: component.replay_from() for name, component in self._components.items()}
            replayed = 0
            schema = FieldSchema(self.manifest.fields)
            for record in self._wal.records():
                seq = record["seq"]
                if record["op"] == "upsert":
                    schema = schema.accept((d[0], d[3]) for d in record["docs"])
                behind = [name for name, upto in done.items() if upto is None or seq > upto]
                self._apply(record, store=seq > store_seq, components=behind)
                replayed += 1
                self._seq = max(self._seq, seq)
            self._seq = max(self._seq, self.store.seq)
            self._bound = self.store.next_docno()
            self._bitmap = self.store.live_bitmap(self._seq) if self.store.has_versions() else None
            self.manifest = replace(self.manifest, doc_count=self.store.count(self._seq), fields=schema.as_dict())
            log.warning("index %s: replayed %d write batch(es) up to seq %d", self.name, replayed, self._seq)
            self._checkpoint_locked()

    # --- checkpoints, compaction, snapshots ----------------------------------------------------------

    def checkpoint(self) -> None:
        with self._write_lock:
            if self._failed:
                self._check_writable("checkpoints")
            self._checkpoint_locked()

    def compact(self) -> None:
        """Checkpoint with every deleted version removed now: from FAISS, from the document store, and from
        Lucene's segments (so BM25 statistics no longer count deleted documents)."""
        with self._write_lock:
            self._check_writable()
            self._open_writers()
            self._checkpoint_locked(force_compact=True)

    def _oldest_view_seq(self) -> int:
        return self._views.oldest_seq(self._seq)

    def _checkpoint_locked(self, force_compact: bool = False) -> None:
        if not self._writing:
            return
        try:
            self._checkpoint_files(force_compact)
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            # A writer may be closed for good now (Lucene closes one whose flush failed): writes wait for a reopen.
            self._failed = DISK_FULL
            raise disk_full(exc, f"checkpointing index {self.name!r}", "every acknowledged write is still in the "
                            "write-ahead log and is applied when the index is reopened (reload it once there is "
                            "space)") from None

    def _checkpoint_files(self, force_compact: bool) -> None:
        marker = self.folder / MARKER
        marker.write_bytes(b"")
        fsync_path(self.folder)
        threshold = 0.0 if force_compact else self.options.compact_fraction
        merged = [c.merge_deletes(threshold) for c in self._components.values()]  # every one, no short cut
        if any(merged):
            self._publish()  # searches move to the merged segments; the old readers go with their last search
        dead = np.asarray(self.store.dead_docnos(self._oldest_view_seq()), dtype=np.int64)
        compacted = [c.compact(dead, threshold) for c in self._components.values()]
        files = [f for component in self._components.values() for f in component.commit(self._seq)]
        if len(dead) and all(compacted):
            self.store.purge(dead.tolist())  # after every component's files without them are on disk
        fsync_path(self.folder / DocStore.FILE)
        files.append(DocStore.FILE)
        retrievers = {name: replace(info, size_bytes=folder_size(self.folder / name))
                      for name, info in self.manifest.retrievers.items()}
        self.manifest = replace(
            self.manifest, doc_count=self.store.count(self._seq), live_seq=self._seq, retrievers=retrievers,
            updated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            docstore_bytes=folder_size(self.folder / DocStore.FILE),
            files=checksum_files(self.folder, sorted(files), previous=self.manifest.files),
        )
        self.manifest.write(self.folder)
        self._wal.reset()
        marker.unlink()
        fsync_path(self.folder)

    def snapshot(self, root: Path) -> Path:
        """Write a point-in-time copy as ``root/NAME@STAMP/NAME``: an index root ``hybrid serve`` can load."""
        with self._write_lock:
            self.checkpoint()
            ensure_free(self.folder, self.options.min_free_disk_mb, "the snapshot")
            return write_snapshot(root, self.name, self._seq, self.copy_to)

    def copy_to(self, folder: Path) -> None:
        """Copy the index as of its last checkpoint into the new ``folder``, with a manifest checksumming the copy
        (Lucene and FAISS files are hard links where the file system allows: they never change in place)."""
        with self._write_lock:
            for rel in self.manifest.files:
                source, copy = self.folder / rel, folder / rel
                copy.parent.mkdir(parents=True, exist_ok=True)
                if rel == DocStore.FILE:
                    self.store.backup(copy)
                    continue
                try:
                    os.link(source, copy)
                except OSError:
                    shutil.copy2(source, copy)
            manifest = replace(self.manifest, files=checksum_files(folder, sorted(self.manifest.files),
                                                                    previous=self.manifest.files))
            manifest.write(folder)

    # --- closing -------------------------------------------------------------------------------------

    def stop_writes(self, checkpoint: bool = True) -> None:
        """Checkpoint (when written to), release the writers and the lock, refuse further writes;
        searches keep working on the current view."""
        with self._write_lock:
            if self._closed:
                return
            try:
                if checkpoint and not self._failed:
                    self._checkpoint_locked()
            finally:
                self._closed = True
                try:
                    self._close_writers()
                except Exception as exc:  # a writer that cannot flush (a full disk): the log holds its writes
                    if not (self._failed or is_disk_full(exc)):
                        raise
                    log.error("index %s: writers closed without flushing (%s); the write-ahead log keeps every "
                              "write", self.name, DISK_FULL if is_disk_full(exc) else str(exc).splitlines()[0][:300])
                finally:
                    self._held.close()
                    self._wal.close()

    def close(self, checkpoint: bool = True) -> None:
        """:meth:`stop_writes`, then drop the current view; searches in flight finish first."""
        try:
            self.stop_writes(checkpoint)
        finally:
            self._views.close()
            thaw()


def write_snapshot(root: Path, name: str, seq: int, fill: Callable[[Path], None]) -> Path:
    """``root/NAME@STAMP/NAME``, written by ``fill`` into a ``.partial`` folder and renamed when complete, so a
    snapshot that exists is whole."""
    stamp = time.strftime("%Y%m%dT%H%M%S") + f"-{seq}"
    target = Path(root) / f"{name}@{stamp}" / name
    partial = target.with_name(name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        fill(partial)
        os.rename(partial, target)
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if not target.exists():
            shutil.rmtree(target.parent, ignore_errors=True)
        if isinstance(exc, Exception) and is_disk_full(exc):
            raise disk_full(exc, f"writing a snapshot of index {name!r}", "the partial snapshot was removed; the "
                                 "index is unchanged") from None
        raise
    return target


def snapshot_root(index_root: Path) -> Path:
    return Path(index_root) / SNAPSHOTS


__all__ = ["IndexFailedError", "LiveIndex", "LiveWriteError", "MANIFEST", "WriteResult", "snapshot_root"]
