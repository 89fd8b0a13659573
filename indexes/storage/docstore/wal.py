"""The write-ahead log of a live index: a write is acknowledged only once its record is on disk.

One record a line, ``CRC32<TAB>JSON``; a record holds everything needed to redo the write in every
retriever without re-encoding (documents, docnos, SPLADE impacts, dense vectors). After a crash the
index replays the records its components had not yet persisted; a torn last line (the process died
while writing it, so it was never acknowledged) is cut off. A checkpoint persists every component
and empties the log.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FILE = "wal.log"


class WriteAheadLog:
    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / FILE
        self._handle = None

    def append(self, record: dict[str, Any]) -> int:
        """Write and fsync one record; returns the log's size afterwards."""
        body = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        line = b"%08x\t%s\n" % (zlib.crc32(body), body)
        if self._handle is None:
            self._handle = self.path.open("ab")
        start = self._handle.tell()
        try:
            self._handle.write(line)
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError:
            # A part of the line may be on disk (a full disk): cut it off, so the next record starts on a clean
            # line and a replay never stops at this one before later, acknowledged records.
            handle, self._handle = self._handle, None
            try:
                handle.close()  # what it still buffers may fail to flush too
            except OSError:
                pass
            with self.path.open("r+b") as handle:
                handle.truncate(start)
                os.fsync(handle.fileno())
            raise
        return self._handle.tell()

    def records(self) -> Iterator[dict[str, Any]]:
        """Every intact record in order; a damaged tail is truncated away."""
        if not self.path.exists():
            return
        good = 0
        with self.path.open("rb") as handle:
            for line in handle:
                crc, sep, body = line.rstrip(b"\n").partition(b"\t")
                if not line.endswith(b"\n") or not sep or f"{zlib.crc32(body):08x}".encode() != crc:
                    break
                good += len(line)
                yield json.loads(body)
        if good < self.path.stat().st_size:
            with self.path.open("r+b") as handle:
                handle.truncate(good)
                os.fsync(handle.fileno())

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def reset(self) -> None:
        """Empty the log (every record is persisted elsewhere)."""
        self.close()
        with self.path.open("wb") as handle:
            os.fsync(handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
