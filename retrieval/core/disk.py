"""A full disk, recognised wherever it surfaces, and refused before a write starts where that can be known.

The disk fills up under four engines that each report it their own way: Python (``OSError`` ENOSPC/EDQUOT), SQLite
(``database or disk is full``), Lucene through pyjnius (a ``JavaException`` whose text holds ``No space left on
device``, also as the cause of an ``AlreadyClosedException``) and FAISS (a ``RuntimeError`` with the C library's
message). :func:`is_disk_full` knows all four, so the faces answer one way: :class:`DiskFullError`, HTTP 507 and
one CLI line with exit status 2.

Live writes also check the free space first (:func:`ensure_free`, the ``min_free_disk_mb`` setting): below it a
write is refused before anything is logged, so a client never gets an error for a write that later turns up (what
Elasticsearch's flood-stage watermark does). The check cannot see a disk that fills while a write runs; the
write-ahead log then keeps the write (see ``indexes/indexing/live.py``).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from retrieval.core.errors import HybridError

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "database or disk is full", "File too large")


NO_SPACE = "no space left on the disk (it is full, or a file size or quota limit was reached)"


class DiskFullError(HybridError, OSError):
    """The file system holding an index (or a build, a snapshot) is full; the message says what was kept."""

    http_status = 507


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the disk is full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DiskFullError):
            return True
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return True
        if isinstance(current, sqlite3.Error) and (getattr(current, "sqlite_errorcode", None) == 13  # SQLITE_FULL
                                                   or (str(current) == "disk I/O error" and _file_size_limited())):
            return True
        text = str(current)
        if any(marker in text for marker in _FULL_TEXTS):
            return True
        current = current.__cause__ or current.__context__
    return False


def _file_size_limited() -> bool:
    """Whether this process may not grow a file past some size (``ulimit -f``): SQLite reports a write refused for
    that (EFBIG) as a plain "disk I/O error", which then means the limit, not a failing disk."""
    import resource

    return resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY


def disk_full(exc: BaseException, doing: str, kept: str) -> DiskFullError:
    """The one message a full disk gets: what was being done, and what is kept (``exc`` must be a full disk)."""
    if isinstance(exc, DiskFullError):
        return exc
    return DiskFullError(f"{NO_SPACE} while {doing}; {kept}")


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def ensure_free(path: Path, minimum_mb: int, doing: str) -> None:
    """Refuse ``doing`` with :class:`DiskFullError` when less than ``minimum_mb`` MiB are free where ``path`` is."""
    if minimum_mb <= 0:
        return
    free = free_bytes(path)
    if free < minimum_mb * 2**20:
        raise DiskFullError(f"only {free / 2**20:.1f} MiB free on the disk holding the index (min_free_disk_mb is "
                            f"{minimum_mb}): {doing} refused before anything was written; free space and retry")
