"""The index root on disk, and the atomic swap that makes builds all-or-nothing.

    ROOT/NAME                     -> symlink to .versions/NAME@STAMP (what readers open)
    ROOT/.versions/NAME@STAMP/    one complete index: manifest.json, docs.sqlite, bm25/, splade/, dense/
    ROOT/.versions/NAME@STAMP.building/  a build in progress (never opened by readers)
    ROOT/.locks/NAME.lock         held by the one build of NAME at a time

A build writes into a ``.building`` folder and publishes it by replacing the ``NAME`` symlink with
``os.replace`` (atomic on POSIX): a reader sees the old index or the new one, never a mix. A killed
build leaves only a ``.building`` folder that the next build or ``hybrid index list`` removes once
its lock is free. A plain folder with a manifest (a copied index) is also accepted as ``ROOT/NAME``.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from indexes.storage.docstore.manifest import MANIFEST
from retrieval.core.errors import ConflictError, HybridError, NotFoundError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
VERSIONS = ".versions"
LOCKS = ".locks"
BUILDING = ".building"


class IndexNotFoundError(NotFoundError, LookupError):
    pass


class IndexNameError(HybridError, ValueError):
    pass


class IndexBusyError(ConflictError, RuntimeError):
    pass


def validate_name(name: str) -> str:
    if not NAME_RE.match(name) or ".." in name:
        raise IndexNameError(
            f"invalid index name {name!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


class IndexRoot:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()

    def path(self, name: str) -> Path:
        return self.root / validate_name(name)

    def resolve(self, name: str) -> Path:
        """The folder of the live index ``name``."""
        link = self.path(name)
        if not (link / MANIFEST).is_file():
            raise IndexNotFoundError(f"no index named {name!r} under {self.root}")
        return link.resolve()

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if not p.name.startswith(".") and NAME_RE.match(p.name) and (p / MANIFEST).is_file()
        )

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        locks = self.root / LOCKS
        locks.mkdir(parents=True, exist_ok=True)
        handle = (locks / f"{validate_name(name)}.lock").open("w")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise IndexBusyError(f"index {name!r} is being built or changed by another process; wait for it") from None
            yield
        finally:
            handle.close()

    @contextmanager
    def writer_lock(self, name: str, folder: Path) -> Iterator[None]:
        """:meth:`lock` for live writes to the open index ``folder``, refused if ``name`` now points elsewhere (a
        rebuild published since the index was opened: its writes would land in a version nobody reads)."""
        with self.lock(name):
            if self.path(name).resolve() != folder:
                raise IndexBusyError(f"index {name!r} was rebuilt or replaced on disk since it was opened; reload it")
            yield

    def new_build_folder(self, name: str) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        folder = self.root / VERSIONS / f"{validate_name(name)}@{stamp}{BUILDING}"
        folder.mkdir(parents=True)
        return folder

    def publish(self, name: str, building: Path, on_renamed: Callable[[], None] | None = None) -> Path:
        """Rename the finished build and atomically point ``NAME`` at it; returns the final folder."""
        final = building.with_name(building.name.removesuffix(BUILDING))
        _fsync_tree(building)
        os.rename(building, final)
        if on_renamed:
            on_renamed()
        link = self.path(name)
        previous = link.resolve() if link.is_symlink() else None
        if link.exists() and not link.is_symlink():
            raise IndexBusyError(f"{link} is a plain folder, not a managed index; move it away first")
        tmp_link = self.root / f".{name}.link-{uuid.uuid4().hex[:8]}"
        os.symlink(os.path.relpath(final, self.root), tmp_link)
        os.replace(tmp_link, link)
        fsync_path(self.root)
        if previous is not None and previous != final and previous.parent == self.root / VERSIONS:
            # Open readers keep their files (POSIX semantics); new readers see only the new version.
            shutil.rmtree(previous, ignore_errors=True)
        return final

    def delete(self, name: str) -> None:
        link = self.path(name)
        if not link.exists() and not link.is_symlink():
            raise IndexNotFoundError(f"no index named {name!r} under {self.root}")
        target = link.resolve()
        if link.is_symlink():
            link.unlink()
            if target.parent == self.root / VERSIONS:
                shutil.rmtree(target, ignore_errors=True)
        else:
            shutil.rmtree(link)

    def collect_garbage(self, name: str) -> list[Path]:
        """Remove unpublished or orphaned versions of ``name``; call with its lock held."""
        versions = self.root / VERSIONS
        if not versions.is_dir():
            return []
        link = self.path(name)
        live = link.resolve() if link.is_symlink() else None
        removed = []
        for folder in versions.glob(f"{name}@*"):
            if folder != live:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        for stale in self.root.glob(f".{name}.link-*"):
            stale.unlink(missing_ok=True)
        return removed


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's fsync makes renames and new names in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for dirpath, _, files in os.walk(path):
        for file in files:
            fsync_path(Path(dirpath) / file)
        fsync_path(Path(dirpath))
