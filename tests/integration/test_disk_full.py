"""A disk that fills up (issue 35, item 2): a build, ``index add``, a live upsert, a checkpoint and a snapshot each
fail with a clear message (HTTP 507, one CLI line with exit status 2), acknowledged writes survive, and the index
opens and answers once there is space again.

Two ways to fill a disk, each test run with both where it can:

* ``tmpfs``: a real small file system, mounted here (skipped with the reason where mounting is not permitted),
  filled with a filler file to a few hundred KB: the kernel answers ENOSPC to every writer (Python, SQLite, Lucene's
  JVM, FAISS);
* ``rlimit``: no mount: the processes under test run with ``RLIMIT_FSIZE`` (``ulimit -f``), so the kernel refuses
  every write past that many bytes of a file with EFBIG; the same code paths as ENOSPC, injected at the write layer
  of every engine alike.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from indexes.indexing.builder import BuildOptions, build_index
from indexes.indexing.live import LiveIndex
from indexes.storage.docstore.layout import IndexRoot
from retrieval.search.pipeline import Searcher
from tests.support import cranfield_docs, write_jsonl
from tests.support.server import Server

pytestmark = pytest.mark.slow  # real models, a mounted file system or servers under a file-size limit

NO_SPACE = "no space left on the disk"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BM25, SPLADE and dense (Lucene, the impact matrix, FAISS, SQLite: every writer) over 60 documents."""
    folder = tmp_path_factory.mktemp("disk-source")
    docs = cranfield_docs(60)
    corpus = write_jsonl(folder / "corpus.jsonl", docs)
    build_index(corpus, "small", IndexRoot(folder / "root"), BuildOptions(progress=False, batch_size=16))
    return IndexRoot(folder / "root").resolve("small")


class Disk:
    """Where the index root lives, and how to fill that disk up and free it again."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind, self.folder = kind, folder
        self.limit: int | None = None  # rlimit: the file-size limit the next processes get

    @property
    def root(self) -> Path:
        return self.folder / "root"

    def fill(self, leave: int) -> None:
        """Leave about ``leave`` bytes to write (tmpfs: free space; rlimit: bytes a file may hold)."""
        if self.kind == "tmpfs":
            st = os.statvfs(self.folder)
            with (self.folder / "filler").open("wb") as handle:
                handle.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
        else:
            self.limit = leave

    def free(self) -> None:
        (self.folder / "filler").unlink(missing_ok=True)
        self.limit = None

    def preexec(self) -> Callable[[], None] | None:
        limit = self.limit
        if limit is None:
            return None

        def limited() -> None:  # in the child, before exec: inherited by the JVM it starts
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal's default (a core dump)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        return limited

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HYBRID_MIN_FREE_DISK_MB": "0"}  # the full disk itself, not the watermark
        return subprocess.run([sys.executable, "-m", "service.cli", *args, "--index-root", str(self.root)], env=env,
                              capture_output=True, text=True, timeout=600, preexec_fn=self.preexec())


@pytest.fixture(params=["tmpfs", "rlimit"])
def disk(request: pytest.FixtureRequest, tmp_path: Path, built: Path) -> Iterator[Disk]:
    folder = tmp_path / "disk"
    folder.mkdir()
    if request.param == "tmpfs":
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(folder)],
                                 capture_output=True, text=True)
        if mounted.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here ({mounted.stderr.strip()[:200]}); the rlimit "
                        "variant still runs")
    d = Disk(request.param, folder)
    shutil.copytree(built, d.root / "small")
    try:
        yield d
    finally:
        if request.param == "tmpfs":
            subprocess.run(["umount", "-l", str(folder)], check=False)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hybrid: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return errors[0]


def answers(root: Path, ids: list[str] = ()) -> int:  # type: ignore[assignment]
    """The index under ``root`` opens (replaying its log), answers a search and holds ``ids``; its document count."""
    live = LiveIndex.open(root / "small")
    try:
        with live.view() as searcher:
            assert searcher.search("boundary layer", k=3).hits
            found = searcher.store.get(list(ids), searcher.seq)
        assert set(found) == set(ids), sorted(set(ids) - set(found))[:5]
        return live.doc_count
    finally:
        live.close()


def test_a_build_fails_cleanly_and_leaves_the_old_index(disk: Disk, tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "more.jsonl", cranfield_docs(200))
    disk.fill(64 * 1024)
    line = one_error_line(disk.run("index", "build", str(corpus), "--name", "small", "--quiet"))
    assert NO_SPACE in line and "nothing was published" in line, line
    disk.free()
    versions = disk.root / ".versions"
    assert not versions.exists() or not any(p.name.endswith(".building") for p in versions.iterdir())
    assert answers(disk.root) == 60  # the old index, unchanged


def test_index_add_fails_cleanly_and_keeps_what_it_added(disk: Disk, tmp_path: Path) -> None:
    docs = cranfield_docs(400)[60:]
    corpus = write_jsonl(tmp_path / "add.jsonl", docs)
    disk.fill(1536 * 1024 if disk.kind == "tmpfs" else 600 * 1024)  # room for a few batches of 20
    line = one_error_line(disk.run("index", "add", "small", str(corpus), "--batch", "20", "--quiet"))
    assert NO_SPACE in line, line
    added = int(re.search(r"(\d+) documents of this run were added", line).group(1))  # type: ignore[union-attr]
    assert added > 0, line
    disk.free()
    count = answers(disk.root, [d["_id"] for d in docs[:added]])
    assert 60 + added <= count <= 60 + added + 20  # a batch cut off half-way is applied from the log, or not at all


def test_upserts_checkpoint_and_snapshot_over_http(disk: Disk) -> None:
    env = {"HYBRID_MIN_FREE_DISK_MB": "0"}  # the full disk itself, not the watermark
    if disk.kind == "rlimit":
        disk.fill(150 * 1024)  # below the document store's size after a few writes, and a snapshot's copy of it
    server = Server(disk.root, env=env, preexec=disk.preexec())
    acknowledged: list[str] = []
    try:
        if disk.kind == "tmpfs":
            disk.fill(600 * 1024)
        url = f"{server.url}/v1/indexes/small"
        for i, doc in enumerate(cranfield_docs(400)[60:]):
            r = httpx.put(f"{url}/documents", timeout=120, json={"documents": [
                {"_id": f"w{i}", "title": doc["title"], "text": doc["text"]}]})
            if r.status_code != 200:
                break
            acknowledged.append(f"w{i}")
        assert r.status_code == 507 and NO_SPACE in r.json()["error"]["message"], r.text
        assert acknowledged, "the disk filled before the first write; leave more room"
        snap = httpx.post(f"{url}/snapshot", timeout=120)  # a checkpoint first: 507 (or 503: the index failed)
        assert snap.status_code in (503, 507), snap.text
        snapshots = disk.root / ".snapshots"
        assert not snapshots.exists() or not any(snapshots.iterdir())  # no partial snapshot left
        assert httpx.post(f"{url}/search", json={"query": "boundary layer"}, timeout=60).status_code == 200
        disk.free()
        if disk.kind == "tmpfs":  # space again: a reload replays the log; snapshots work
            assert httpx.post(f"{url}/reload", timeout=300).status_code == 200
        else:  # the limit is the process's own: a new process, without it
            server.stop()
            server = Server(disk.root, env=env)
        r = httpx.post(f"{server.url}/v1/indexes/small/search", json={"query": "wing"}, timeout=60)
        assert r.status_code == 200
        assert httpx.post(f"{server.url}/v1/indexes/small/snapshot", timeout=120).status_code == 201
    finally:
        server.stop()
    assert answers(disk.root, acknowledged) >= 60 + len(acknowledged)  # every acknowledged write is there


def test_a_snapshot_on_a_full_disk_is_one_line_and_leaves_nothing(disk: Disk) -> None:
    disk.fill(64 * 1024)
    line = one_error_line(disk.run("index", "snapshot", "small"))
    assert NO_SPACE in line, line
    disk.free()
    snapshots = disk.root / ".snapshots"
    assert not snapshots.exists() or not any(snapshots.iterdir())
    assert answers(disk.root) == 60


def test_writes_stop_at_the_watermark_before_anything_is_written(built: Path, tmp_path: Path) -> None:
    """min_free_disk_mb above the free space: a write is refused (507) before it is logged; no mount needed."""
    shutil.copytree(built, tmp_path / "root" / "small")
    server = Server(tmp_path / "root", env={"HYBRID_MIN_FREE_DISK_MB": str(2**40)})
    try:
        r = httpx.put(f"{server.url}/v1/indexes/small/documents", timeout=60,
                      json={"documents": [{"_id": "x", "text": "wing flutter"}]})
        assert r.status_code == 507 and "refused before anything was written" in r.json()["error"]["message"]
        assert not (tmp_path / "root" / "small" / "wal.log").exists() or \
            (tmp_path / "root" / "small" / "wal.log").stat().st_size == 0
        r = httpx.post(f"{server.url}/v1/indexes/small/snapshot", timeout=60)
        assert r.status_code == 507
        assert httpx.post(f"{server.url}/v1/indexes/small/search", json={"query": "wing"}).status_code == 200
    finally:
        server.stop()
    with Searcher.open(tmp_path / "root" / "small") as searcher:
        assert searcher.manifest.doc_count == 60
