"""SPLADE searched in memory (indexes/storage/sparse/impact_matrix.py) against Lucene: the same hits and scores, on a
batch-built index and through live upserts, deletes, compaction and a reopen. The matrix files on their own are
tests/unit/test_sparse_kernels.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexes.indexing.builder import BuildOptions, build_index
from indexes.indexing.live import LiveIndex
from indexes.kinds.base import KindError
from indexes.storage.docstore.layout import IndexRoot
from indexes.storage.sparse import impact_matrix
from retrieval.core.options import OpenOptions
from retrieval.search.pipeline import Searcher
from tests.support import cranfield_docs, write_jsonl
from tests.support.live import copy_index, doc

QUERIES = ["boundary layer heat transfer", "supersonic flow over a wing", "similarity laws for aeroelastic models",
           "what is the effect of the nose radius on the pressure distribution", "flutter"]


def _hits(searcher: Searcher, query: str, k: int) -> list[tuple[str, float]]:
    return [(h.id, h.score) for h in searcher.search(query, k=k, retrievers=["splade"]).hits]


def _same_as_lucene(folder: Path, matrix: Searcher | None = None) -> None:
    lucene = Searcher.open(folder, OpenOptions(splade_search="lucene", verify="off"), retrievers=["splade"])
    memory = matrix or Searcher.open(folder, OpenOptions(splade_search="matrix", verify="off"), retrievers=["splade"])
    try:
        assert memory.searchers["splade"].matrix is not None and lucene.searchers["splade"].matrix is None
        for query in QUERIES:
            for k in (1, 10, 100):
                assert _hits(memory, query, k) == _hits(lucene, query, k)  # ids, order and scores, exactly
    finally:
        lucene.close()
        if matrix is None:
            memory.close()


def test_matrix_search_equals_lucene_on_a_built_index(small_index: Path) -> None:
    assert impact_matrix.exists(small_index / "splade")
    _same_as_lucene(small_index)
    auto = Searcher.open(small_index, OpenOptions(verify="off"), retrievers=["splade"])
    try:
        assert auto.searchers["splade"].matrix is not None  # auto: a small matrix is searched in memory
    finally:
        auto.close()


def test_matrix_follows_live_writes_deletes_compaction_and_a_reopen(index_root: Path, tmp_path: Path) -> None:
    root, folder = copy_index(index_root, tmp_path)
    rows = cranfield_docs(80)
    live = LiveIndex.open(folder, root=root, options=OpenOptions(splade_search="matrix"))
    live.upsert([doc(r) for r in rows[60:75]])
    live.upsert([doc(dict(rows[5], text="transonic flutter of swept wings in a wind tunnel"))])
    live.delete([rows[3]["_id"], rows[62]["_id"]])
    with live.view() as searcher:
        assert searcher.searchers["splade"].matrix is not None
        ids = {h.id for h in searcher.search("flow", k=200, depth=200, retrievers=["splade"]).hits}
        assert rows[70]["_id"] in ids and not ids & {rows[3]["_id"], rows[62]["_id"]}
        top = _hits(searcher, "transonic flutter of swept wings", 3)
        assert top[0][0] == rows[5]["_id"]
    live.compact()
    live.upsert([doc(r) for r in rows[75:80]])
    live.close()
    assert len(list((folder / "splade" / impact_matrix.FOLDER).glob("part-*.npz"))) >= 2  # the build's + a checkpoint's
    _same_as_lucene(folder)  # reopened from the files: base part, appended parts, removed docnos


@pytest.mark.slow
def test_index_without_a_matrix_searches_lucene(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", cranfield_docs(12))
    root = IndexRoot(tmp_path / "root")
    build_index(corpus, "plain", root, BuildOptions(progress=False, retrievers=BuildOptions().retrievers[1:2],
                                                    splade_matrix=False))
    folder = root.resolve("plain")
    assert not impact_matrix.exists(folder / "splade")
    auto = Searcher.open(folder, OpenOptions(verify="off"))
    try:
        assert auto.searchers["splade"].matrix is None and auto.search("flow", k=3).hits
    finally:
        auto.close()
    with pytest.raises(KindError, match="has no impact matrix"):
        Searcher.open(folder, OpenOptions(splade_search="matrix", verify="off"))


