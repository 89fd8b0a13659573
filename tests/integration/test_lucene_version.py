"""The manifest records which Lucene wrote an index; an index from a newer Lucene is refused with "rebuild"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import cranfield_docs, write_jsonl


@pytest.fixture(scope="module")
def bm25_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from indexes.indexing.builder import BuildOptions, build_index
    from indexes.storage.docstore.layout import IndexRoot

    tmp = tmp_path_factory.mktemp("lucene-version")
    corpus = write_jsonl(tmp / "corpus.jsonl", cranfield_docs(10))
    root = IndexRoot(tmp / "root")
    build_index(corpus, "v", root, BuildOptions(progress=False, retrievers="bm25"))
    return root.resolve("v")


def _edit_manifest(folder: Path, edit) -> None:  # type: ignore[no-untyped-def]
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_build_records_lucene_pyserini_and_anserini(bm25_index: Path) -> None:
    from indexes.storage.lucene.engine import major, runtime_lucene_version

    data = json.loads((bm25_index / "manifest.json").read_text())
    engine = data["engine"]
    assert engine["lucene_version"] == runtime_lucene_version() and major(engine["lucene_version"]) >= 9
    assert engine["pyserini_version"] and engine["anserini_jar"].startswith("anserini-")
    assert data["retrievers"]["bm25"]["lucene_major"] == major(engine["lucene_version"])


def test_index_from_newer_lucene_is_refused_with_rebuild(bm25_index: Path, tmp_path: Path) -> None:
    import shutil

    from indexes.storage.lucene.engine import LuceneVersionError
    from retrieval.search.pipeline import Searcher

    folder = tmp_path / "v"
    shutil.copytree(bm25_index, folder)
    _edit_manifest(folder, lambda d: d["retrievers"]["bm25"].update(lucene_major=99))
    with pytest.raises(LuceneVersionError, match=r"built with Lucene 99\.x.*rebuild the index") as info:
        Searcher.open(folder)
    assert info.value.http_status == 409 and "\n" not in str(info.value)


def test_manifest_without_versions_still_opens(bm25_index: Path, tmp_path: Path) -> None:
    import shutil

    from retrieval.search.pipeline import Searcher

    folder = tmp_path / "v"
    shutil.copytree(bm25_index, folder)

    def drop(d: dict) -> None:
        d.pop("engine")
        d["retrievers"]["bm25"].pop("lucene_major")

    _edit_manifest(folder, drop)
    searcher = Searcher.open(folder)
    try:
        assert searcher.manifest.engine == {} and searcher.manifest.retrievers["bm25"].lucene_major is None
        assert searcher.search("flow", k=1)
    finally:
        searcher.close()
