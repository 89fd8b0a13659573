"""SQLite document store: the single list of documents every retriever of an index is built from.

``docno`` (0..N-1, insertion order) is the FAISS row number, so dense hits map back to ids
without a second lookup table; Lucene indexes carry the string ids themselves.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from indexes.corpus import Document

SCHEMA = """
CREATE TABLE docs (
    docno INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL
);
"""


class DocStore:
    FILE = "docs.sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._ids: list[str] | None = None  # docno -> id, loaded once for read-only stores

    @classmethod
    def create(cls, folder: Path) -> DocStore:
        conn = sqlite3.connect(folder / cls.FILE, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.executescript(SCHEMA)
        return cls(conn)

    @classmethod
    def open(cls, folder: Path) -> DocStore:
        path = (folder / cls.FILE).resolve()
        conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        return cls(conn)

    def add(self, docs: Iterable[Document]) -> int:
        """Append documents; returns how many were written."""
        count = 0
        with self._lock:
            cur = self._conn.cursor()
            next_no = cur.execute("SELECT COALESCE(MAX(docno) + 1, 0) FROM docs").fetchone()[0]
            batch: list[tuple[int, str, str, str, str]] = []
            for doc in docs:
                batch.append((next_no + count, doc.id, doc.title, doc.text, json.dumps(doc.metadata, ensure_ascii=False)))
                count += 1
                if len(batch) >= 10_000:
                    cur.executemany("INSERT INTO docs VALUES (?, ?, ?, ?, ?)", batch)
                    batch.clear()
            if batch:
                cur.executemany("INSERT INTO docs VALUES (?, ?, ?, ?, ?)", batch)
            self._conn.commit()
        return count

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0])

    def iter_batches(self, batch_size: int) -> Iterator[list[Document]]:
        with self._lock:
            rows = self._conn.execute("SELECT id, title, text, metadata FROM docs ORDER BY docno").fetchall()
        for start in range(0, len(rows), batch_size):
            yield [Document(r[0], r[1], r[2], json.loads(r[3])) for r in rows[start : start + batch_size]]

    def ids_by_docno(self, docnos: Sequence[int]) -> list[str | None]:
        """Dense hits come back as row numbers; an in-memory table keeps this off the query path."""
        if self._ids is None:
            with self._lock:
                self._ids = [r[0] for r in self._conn.execute("SELECT id FROM docs ORDER BY docno")]
        ids = self._ids
        return [ids[n] if 0 <= n < len(ids) else None for n in docnos]

    def get(self, ids: Sequence[str]) -> dict[str, Document]:
        keys = list(ids)
        out: dict[str, Document] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                query = f"SELECT id, title, text, metadata FROM docs WHERE id IN ({marks})"
                for doc_id, title, text, metadata in self._conn.execute(query, chunk):
                    out[doc_id] = Document(doc_id, title, text, json.loads(metadata))
        return out

    def close(self) -> None:
        with self._lock:
            self._conn.close()
