"""SQLite document store: the one list of documents every retriever of an index is built from.

``docno`` is a document version's stable number: the FAISS id of its vector (``IDMap2``), never
reused. Rows are versions: an upsert marks the live version of an id deleted at write ``seq`` and
adds a new row added at ``seq``; a delete only marks. A reader pinned at ``seq`` S sees exactly the
rows with ``added_seq <= S`` and no ``deleted_seq <= S``, so text lookups agree with the retrievers'
point-in-time view while writes go on. Dead rows are dropped when their vectors are compacted away.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexes.storage.docstore.corpus import Document
from indexes.storage.docstore.metadata_columns import MetadataColumns
from retrieval.core.filters import Filter

SCHEMA = """
CREATE TABLE docs (
    docno INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    added_seq INTEGER NOT NULL DEFAULT 0,
    deleted_seq INTEGER
);
CREATE INDEX docs_id ON docs (id);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('seq', '0');
"""
LIVE = "deleted_seq IS NULL"


def _visible(seq: int | None) -> tuple[str, tuple[int, ...]]:
    if seq is None:
        return LIVE, ()
    return "added_seq <= ? AND (deleted_seq IS NULL OR deleted_seq > ?)", (seq, seq)


class DocStore:
    FILE = "docs.sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._ids: list[str] | None = None  # docno -> id; append-only, so old readers keep their view
        self._columns: MetadataColumns | None = None  # loaded by the first filter

    @classmethod
    def create(cls, folder: Path) -> DocStore:
        conn = sqlite3.connect(folder / cls.FILE, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.executescript(SCHEMA)
        return cls(conn)

    @classmethod
    def open(cls, folder: Path, writable: bool = False) -> DocStore:
        path = (folder / cls.FILE).resolve()
        if writable:
            # A rollback journal keeps each write batch atomic in the file itself (no -wal/-shm beside it);
            # the index's own write-ahead log is what makes an acknowledged batch durable.
            conn = sqlite3.connect(path, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("PRAGMA synchronous=NORMAL")
        else:
            conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        return cls(conn)

    def add(self, docs: Iterable[Document]) -> int:
        """Append documents (a batch build); returns how many were written."""
        count = 0
        with self._lock:
            cur = self._conn.cursor()
            next_no = self._next_docno(cur)
            batch: list[tuple[int, str, str, str, str]] = []
            for doc in docs:
                batch.append((next_no + count, doc.id, doc.title, doc.text, json.dumps(doc.metadata, ensure_ascii=False)))
                count += 1
                if len(batch) >= 10_000:
                    cur.executemany("INSERT INTO docs (docno, id, title, text, metadata) VALUES (?, ?, ?, ?, ?)", batch)
                    batch.clear()
            if batch:
                cur.executemany("INSERT INTO docs (docno, id, title, text, metadata) VALUES (?, ?, ?, ?, ?)", batch)
            self._conn.commit()
        return count

    @staticmethod
    def _next_docno(cur: sqlite3.Cursor) -> int:
        """Never reused: the high-water mark survives purging the rows with the largest docnos."""
        top = int(cur.execute("SELECT COALESCE(MAX(docno) + 1, 0) FROM docs").fetchone()[0])
        mark = cur.execute("SELECT value FROM meta WHERE key = 'next_docno'").fetchone()
        return max(top, int(mark[0]) if mark else 0)

    # --- live writes -------------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The last write batch applied to the store."""
        with self._lock:
            return int(self._conn.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])

    def next_docno(self) -> int:
        with self._lock:
            return self._next_docno(self._conn.cursor())

    def live_docnos(self, ids: Sequence[str]) -> dict[str, int]:
        """id -> docno of its live version, for the ids that have one."""
        out: dict[str, int] = {}
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for doc_id, docno in self._conn.execute(f"SELECT id, docno FROM docs WHERE id IN ({marks}) AND {LIVE}", chunk):
                    out[doc_id] = int(docno)
        return out

    def apply(self, seq: int, added: Sequence[tuple[int, Document]], deleted_docnos: Sequence[int]) -> None:
        """One write batch in one transaction, together with its ``seq``."""
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.executemany("UPDATE docs SET deleted_seq = ? WHERE docno = ? AND deleted_seq IS NULL",
                                [(seq, n) for n in deleted_docnos])
                cur.executemany(
                    "INSERT INTO docs (docno, id, title, text, metadata, added_seq) VALUES (?, ?, ?, ?, ?, ?)",
                    [(n, d.id, d.title, d.text, json.dumps(d.metadata, ensure_ascii=False), seq) for n, d in added],
                )
                cur.execute("UPDATE meta SET value = ? WHERE key = 'seq'", (str(seq),))
                cur.execute("INSERT OR REPLACE INTO meta VALUES ('next_docno', ?)", (str(self._next_docno(cur)),))
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                raise
            if self._columns is not None:
                self._columns.add((n, d.metadata) for n, d in added if d.metadata)
            if self._ids is not None:
                for n, d in added:
                    while len(self._ids) < n:
                        self._ids.append("")
                    self._ids.append(d.id)

    def purge(self, docnos: Sequence[int]) -> None:
        """Forget dead versions for good (after their vectors were compacted away)."""
        with self._lock:
            self._conn.executemany(f"DELETE FROM docs WHERE docno = ? AND NOT ({LIVE})", [(n,) for n in docnos])
            self._conn.commit()

    def dead_docnos(self, deleted_up_to: int) -> list[int]:
        """Versions deleted at or before seq ``deleted_up_to`` (no reader can still see them)."""
        with self._lock:
            rows = self._conn.execute("SELECT docno FROM docs WHERE deleted_seq <= ? ORDER BY docno", (deleted_up_to,))
            return [int(r[0]) for r in rows]

    def has_versions(self) -> bool:
        """Whether any row was ever deleted or added by a live write (else every row is live at seq 0)."""
        with self._lock:
            row = self._conn.execute("SELECT 1 FROM docs WHERE deleted_seq IS NOT NULL OR added_seq > 0 LIMIT 1").fetchone()
        return row is not None

    def live_bitmap(self, seq: int | None = None) -> np.ndarray:
        """One bit per docno, set for the versions visible at ``seq`` (little-endian bit order, as FAISS's
        IDSelectorBitmap)."""
        where, args = _visible(seq)
        with self._lock:
            docnos = np.fromiter((r[0] for r in self._conn.execute(f"SELECT docno FROM docs WHERE {where}", args)),
                                 dtype=np.int64)
            top = self._next_docno(self._conn.cursor())
        bits = np.zeros(top, dtype=bool)
        bits[docnos] = True
        return np.packbits(bits, bitorder="little")

    def backup(self, path: Path) -> None:
        """A consistent copy of the store (SQLite's online backup)."""
        target = sqlite3.connect(path)
        try:
            with self._lock:
                self._conn.backup(target)
        finally:
            target.close()

    # --- reads ---------------------------------------------------------------------------------------

    def count(self, seq: int | None = None) -> int:
        where, args = _visible(seq)
        with self._lock:
            return int(self._conn.execute(f"SELECT COUNT(*) FROM docs WHERE {where}", args).fetchone()[0])

    def __len__(self) -> int:
        return self.count()

    def iter_batches(self, batch_size: int) -> Iterator[list[Document]]:
        """Live documents in docno order."""
        with self._lock:
            rows = self._conn.execute(f"SELECT id, title, text, metadata FROM docs WHERE {LIVE} ORDER BY docno").fetchall()
        for start in range(0, len(rows), batch_size):
            yield [Document.stored(r[0], r[1], r[2], json.loads(r[3])) for r in rows[start : start + batch_size]]

    def read_range(self, start: int, count: int) -> list[Document]:
        """``count`` live documents from position ``start`` in docno order (a chunk of :meth:`iter_batches`)."""
        with self._lock:
            rows = self._conn.execute(f"SELECT id, title, text, metadata FROM docs WHERE {LIVE} ORDER BY docno "
                                      "LIMIT ? OFFSET ?", (count, start)).fetchall()
        return [Document.stored(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def iter_metadata(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(id, metadata) of the live documents in docno order (the order of :meth:`iter_batches`)."""
        with self._lock:
            rows = self._conn.execute(f"SELECT id, metadata FROM docs WHERE {LIVE} ORDER BY docno").fetchall()
        for doc_id, metadata in rows:
            yield doc_id, json.loads(metadata)

    def live_ids(self) -> list[str]:
        """The ids of the live documents in docno order (the order of :meth:`iter_batches`), without their text."""
        with self._lock:
            return [r[0] for r in self._conn.execute(f"SELECT id FROM docs WHERE {LIVE} ORDER BY docno")]

    def ids_by_docno(self, docnos: Sequence[int]) -> list[str | None]:
        """Dense hits come back as docnos; an in-memory table keeps this off the query path."""
        if self._ids is None:
            with self._lock:
                table: list[str] = []
                for docno, doc_id in self._conn.execute("SELECT docno, id FROM docs ORDER BY docno"):
                    while len(table) < docno:
                        table.append("")
                    table.append(doc_id)
                self._ids = table
        ids = self._ids
        return [ids[n] or None if 0 <= n < len(ids) else None for n in docnos]

    def filter_mask(self, node: Filter) -> np.ndarray:
        """One bool per docno ever given out (every version, dead ones included: a view intersects it with what
        it can see): whether the metadata filter ``node`` selects it. The first call loads every document's
        metadata into memory (:class:`MetadataColumns`); later writes add theirs."""
        with self._lock:
            if self._columns is None:
                columns = MetadataColumns()
                rows = self._conn.execute("SELECT docno, metadata FROM docs WHERE metadata != '{}' ORDER BY docno")
                columns.add((int(n), json.loads(m)) for n, m in rows)
                self._columns = columns
            return self._columns.mask(node, self._next_docno(self._conn.cursor()))

    def get(self, ids: Sequence[str], seq: int | None = None) -> dict[str, Document]:
        """The versions of ``ids`` visible at ``seq`` (default: the live ones)."""
        keys = list(ids)
        where, args = _visible(seq)
        out: dict[str, Document] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                query = f"SELECT id, title, text, metadata FROM docs WHERE id IN ({marks}) AND {where}"
                for doc_id, title, text, metadata in self._conn.execute(query, [*chunk, *args]):
                    out[doc_id] = Document.stored(doc_id, title, text, json.loads(metadata))
        return out

    def close(self) -> None:
        with self._lock:
            self._conn.close()
