"""Which Lucene wrote an index, recorded at build time and checked on open.

Lucene reads indexes of its own and the previous major version, never a newer one. Pyserini 1.x and
2.x bundle different Lucene majors (9 and 10), so an index built under one Python/pyserini set-up may
be opened under another. The manifest records the versions; an index newer than the running Lucene is
refused with "rebuild" before Lucene fails with a stack trace.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from indexes.storage.lucene.anserini import anserini_version
from retrieval.core.errors import ConflictError
from retrieval.core.jvm import JNI_LOCK, ensure_pyserini


class LuceneVersionError(ConflictError, RuntimeError):
    """The index was written by a newer Lucene than the one installed."""


def runtime_lucene_version() -> str:
    """``org.apache.lucene.util.Version.LATEST`` of the running JVM, e.g. ``9.9.1``."""
    ensure_pyserini()
    from jnius import autoclass

    return str(autoclass("org.apache.lucene.util.Version").LATEST.toString())


def major(version: str) -> int:
    match = re.match(r"(\d+)", version)
    return int(match.group(1)) if match else 0


def runtime_engine() -> dict[str, str]:
    """What the manifest records as ``engine``: the Lucene, pyserini and Anserini jar in use."""
    version = anserini_version()
    return {
        "lucene_version": runtime_lucene_version(),
        "pyserini_version": metadata.version("pyserini"),
        "anserini_jar": f"anserini-{version}-fatjar.jar",
    }


def created_major(index_dir: Path) -> int:
    """The Lucene major version that created the index in ``index_dir`` (kept across merges and commits)."""
    ensure_pyserini()
    from jnius import autoclass

    path = autoclass("java.io.File")(str(index_dir)).toPath()
    directory = autoclass("org.apache.lucene.store.FSDirectory").open(path)
    try:
        with JNI_LOCK:
            infos = autoclass("org.apache.lucene.index.SegmentInfos").readLatestCommit(directory)
            return int(infos.getIndexCreatedVersionMajor())
    finally:
        with JNI_LOCK:
            directory.close()


def check_readable(index_name: str, retriever: str, recorded_major: int | None) -> None:
    """Refuse a retriever whose recorded Lucene major is newer than the running one (None: not recorded)."""
    if recorded_major is None:
        return
    running = runtime_lucene_version()
    if recorded_major > major(running):
        raise LuceneVersionError(
            f"index {index_name!r} retriever {retriever!r} was built with Lucene {recorded_major}.x, this install "
            f"has Lucene {running}; rebuild the index with `hybrid index build` here"
        )
