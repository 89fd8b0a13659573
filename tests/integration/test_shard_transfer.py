"""Shards moved between nodes (indexes/indexing/shard_transfer.py): packed through the object store or fetched
from a URI, each copy checked against the manifest's sizes and SHA-256 sums before anything opens it."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from indexes.indexing.builder import BuildOptions, build_index
from indexes.indexing.shard_transfer import ShardSource, ShardTransferError, fetch_uri, pack, unpack
from indexes.storage.docstore.layout import IndexRoot
from retrieval.search.pipeline import Searcher
from tests.support import cranfield_docs, write_jsonl


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("transfer")
    corpus = write_jsonl(base / "corpus.jsonl", cranfield_docs(20))
    build_index(corpus, "small", IndexRoot(base / "root"), BuildOptions(retrievers=("bm25",), progress=False))
    return IndexRoot(base / "root").resolve("small")


def _search(folder: Path) -> list[str]:
    with Searcher.open(folder, verify="full") as s:
        return [h.id for h in s.search("boundary layer", k=5).hits]


def test_packed_and_unpacked_is_the_same_index(folder: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    unpack(pack(folder), copy)
    assert _search(copy) == _search(folder)
    assert not list(tmp_path.glob("*.partial-*"))


def test_a_damaged_copy_is_refused(folder: Path, tmp_path: Path) -> None:
    data = io.BytesIO(pack(folder))
    out = io.BytesIO()
    with tarfile.open(fileobj=data) as source, tarfile.open(fileobj=out, mode="w") as target:
        for member in source.getmembers():
            content = source.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "docs.sqlite":
                content = content[:-1] + bytes([content[-1] ^ 1])  # one bit flipped
            target.addfile(member, io.BytesIO(content))
    with pytest.raises(ShardTransferError, match="docs.sqlite changed"):
        unpack(out.getvalue(), tmp_path / "copy")
    assert not (tmp_path / "copy").exists() and not list(tmp_path.glob("*.partial-*"))


def test_fetched_from_a_uri(folder: Path, tmp_path: Path) -> None:
    target = tmp_path / "fetched"
    fetch_uri(folder.as_uri(), target)
    assert _search(target) == _search(folder)
    with pytest.raises(ShardTransferError, match="cannot read"):
        fetch_uri((tmp_path / "nothing").as_uri(), tmp_path / "none")
    with pytest.raises(ShardTransferError, match="cannot open"):
        fetch_uri("nosuchscheme://bucket/x", tmp_path / "none")
    source = ShardSource("small-000", uri=folder.as_uri())
    fetched = source.fetch()
    try:
        assert _search(fetched) == _search(folder)
    finally:
        shutil.rmtree(fetched)
