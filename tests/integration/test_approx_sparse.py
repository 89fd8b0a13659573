"""Approximate SPLADE search end to end: the build clusters and tunes it (manifest, GET /v1/indexes/{name}), it is the
default, ``exact`` asks for the exhaustive search per request (library, REST, CLI) and as a setting and then equals
Lucene's hits and scores, ``hybrid index tune`` re-measures and warns, shards rank their candidates together. The
structure's own behaviour (recall, ties, live rows, deletes, filters) is tests/unit/test_clusters.py."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from indexes.indexing.tuning import DOCUMENTS
from indexes.kinds.base import ViewState
from indexes.kinds.splade_matrix import MatrixSearch
from indexes.storage.docstore.corpus import Document
from indexes.storage.docstore.manifest import Manifest
from indexes.storage.docstore.store import DocStore
from indexes.storage.sparse import clusters, impact_matrix
from indexes.storage.sparse.impact_matrix import ImpactMatrix, MatrixWriter
from retrieval.core.options import OpenOptions
from retrieval.search.pipeline import Searcher
from tests.support import cranfield_docs, write_jsonl
from tests.support.cli import run_cli
from tests.support.live import copy_index
from tests.support.server import Server

QUERIES = ["flow", "boundary layer heat transfer", "supersonic flow over a wing", "pressure distribution"]


def _hits(searcher: Searcher, query: str, k: int = 60, **options: object) -> list[tuple[str, float]]:
    return [(h.id, h.score) for h in searcher.search(query, k=k, retrievers=["splade"], **options).hits]


def test_the_build_clusters_the_matrix_and_records_its_tuning(small_index: Path) -> None:
    manifest = Manifest.read(small_index)
    entry = manifest.retrievers["splade"]
    assert entry.parameters["clusters"] is True and entry.parameters["cluster_count"] >= 2  # 60 rows, ~32 each
    assert f"splade/{impact_matrix.FOLDER}/{clusters.FILE}" in manifest.files  # checksummed like every file
    tuning = entry.search_tuning
    assert tuning is not None and tuning["target"] == 0.98 and tuning["reached"]
    assert tuning["source"] == DOCUMENTS and tuning["queries"] > 0  # no queries.jsonl beside the corpus
    assert tuning["parameters"]["clusters"] == entry.parameters["cluster_count"] and tuning["recall_at_10"] >= 0.98
    assert [g["parameters"]["probes"] for g in tuning["grid"]][-1] == tuning["parameters"]["probes"]


def test_exact_per_request_and_as_a_setting_equals_lucene(small_index: Path) -> None:
    approximate = Searcher.open(small_index, verify="off", retrievers=["splade"], splade_probes=1)
    always_exact = Searcher.open(small_index, verify="off", retrievers=["splade"], splade_probes=1, exact=True)
    lucene = Searcher.open(small_index, OpenOptions(splade_search="lucene", verify="off"), retrievers=["splade"])
    try:
        fewer = 0
        for query in QUERIES:
            exact = _hits(approximate, query, exact=True)
            assert exact == _hits(lucene, query) == _hits(always_exact, query)  # ids, order, scores
            approx = _hits(approximate, query)
            scores = dict(exact)
            assert all(abs(scores[doc_id] - score) < 1e-3 for doc_id, score in approx)  # exact dot products
            fewer += len(approx) < len(exact)  # one cluster of several scored
        assert fewer
    finally:
        for searcher in (approximate, always_exact, lucene):
            searcher.close()


@pytest.fixture(scope="module")
def probes_one_server(index_root: Path):  # type: ignore[no-untyped-def]
    """A server over the session index whose SPLADE scores one cluster by default."""
    server = Server(index_root, env={"HYBRID_SPLADE_PROBES": "1"})
    yield server
    server.stop()


def test_rest_shows_the_tuning_and_takes_exact(probes_one_server: Server, small_index: Path) -> None:
    info = httpx.get(f"{probes_one_server.url}/v1/indexes/small", timeout=30).json()
    splade = next(r for r in info["retrievers"] if r["name"] == "splade")
    assert splade["search_tuning"] == Manifest.read(small_index).retrievers["splade"].search_tuning
    assert next(r for r in info["retrievers"] if r["name"] == "bm25")["search_tuning"] is None
    with Searcher.open(small_index, verify="off", retrievers=["splade"]) as searcher:
        for query in QUERIES[:2]:
            body = {"query": query, "k": 60, "retrievers": ["splade"]}
            approx = httpx.post(f"{probes_one_server.url}/v1/indexes/small/search", json=body, timeout=30).json()
            exact = httpx.post(f"{probes_one_server.url}/v1/indexes/small/search", json={**body, "exact": True},
                               timeout=30).json()
            assert [(h["id"], h["score"]) for h in exact["hits"]] == _hits(searcher, query, exact=True)
            assert len(approx["hits"]) <= len(exact["hits"])
    bad = httpx.post(f"{probes_one_server.url}/v1/indexes/small/search", json={"query": "x", "exact": "maybe"},
                     timeout=30)
    assert bad.status_code == 422 and "exact" in bad.text


def test_cli_search_takes_exact(index_root: Path, small_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRID_SPLADE_PROBES", "1")
    args = ("search", "small", "flow", "--retrievers", "splade", "--k", "60", "--json")
    approx = json.loads(run_cli(*args, root=index_root).stdout)["hits"]
    proc = run_cli(*args, "--exact", root=index_root)
    assert proc.returncode == 0, proc.stderr
    exact = json.loads(proc.stdout)["hits"]
    with Searcher.open(small_index, verify="off", retrievers=["splade"]) as searcher:
        assert [(h["id"], h["score"]) for h in exact] == _hits(searcher, "flow", exact=True)
    assert len(approx) < len(exact)


def test_tune_command_rewrites_the_manifest_and_warns(index_root: Path, tmp_path: Path) -> None:
    root, folder = copy_index(index_root, tmp_path, "copy")
    queries = write_jsonl(tmp_path / "queries.jsonl", [{"_id": str(i), "text": q} for i, q in enumerate(QUERIES)])
    files = Manifest.read(folder).files
    proc = run_cli("index", "tune", "copy", "--target-recall", "0.5", "--queries", str(queries), root=root.root)
    assert proc.returncode == 0, proc.stderr
    tuning = Manifest.read(folder).retrievers["splade"].search_tuning
    assert tuning is not None and tuning["target"] == 0.5 and tuning["source"] == "queries.jsonl"
    assert tuning["queries"] == len(QUERIES) and tuning["recall_at_10"] >= 0.5
    assert "splade: approximate search" in proc.stdout and Manifest.read(folder).files == files  # files unchanged
    # Recall 1.0: reached by scoring every cluster (or fewer, if they hold every query's top 10).
    full = run_cli("index", "tune", "copy", "--target-recall", "1.0", "--retriever", "splade", root=root.root)
    chosen = Manifest.read(folder).retrievers["splade"].search_tuning
    assert full.returncode == 0 and chosen is not None and chosen["recall_at_10"] == 1.0
    assert ("exact in effect" in full.stderr) == (chosen["parameters"]["probes"] == chosen["parameters"]["clusters"])
    assert run_cli("index", "tune", "copy", "--retriever", "nope", root=root.root).returncode == 2


@pytest.mark.slow
def test_a_one_cluster_index_warns_at_build_that_it_is_exact_in_effect(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", cranfield_docs(20))
    proc = run_cli("index", "build", str(corpus), "--name", "tiny", "--retrievers", "splade", "--quiet",
                   root=tmp_path / "root")
    assert proc.returncode == 0, proc.stderr
    assert "warning: retriever 'splade': recall@10 0.98 is reached only by the exhaustive setting" in proc.stderr
    assert "splade: approximate search {'probes': 1, 'clusters': 1}" in proc.stdout


def _shard(folder: Path, prefix: str, vectors: list[dict[str, int]]) -> tuple[ImpactMatrix, DocStore]:
    folder.mkdir()
    store = DocStore.create(folder)
    store.add(Document(f"{prefix}{i:05d}", "", "x") for i in range(len(vectors)))
    writer = MatrixWriter(folder / impact_matrix.FOLDER)
    for vector in vectors:
        writer.add(vector)
    writer.close()
    ImpactMatrix(folder).cluster()
    return ImpactMatrix(folder), store


def test_shards_rank_every_shards_candidates_together(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    topics = [rng.choice(200, 30, replace=False) for _ in range(20)]
    vectors = [{f"t{t}": int(rng.integers(1, 100)) for t in rng.choice(topics[rng.integers(20)], 15, replace=False)}
               for _ in range(1200)]
    (a, store_a), (b, store_b) = _shard(tmp_path / "a", "a", vectors[:600]), _shard(tmp_path / "b", "b", vectors[600:])
    assert a.clusters is not None and b.clusters is not None
    views = [ViewState(), ViewState()]
    exhaustive = MatrixSearch([a, b], [store_a, store_b], views, [a.clusters.count, b.clusters.count])
    approximate = MatrixSearch([a, b], [store_a, store_b], views, [2, 2])
    queries = [{f"t{t}": int(rng.integers(1, 50)) for t in rng.choice(200, 8, replace=False)} for _ in range(30)]
    for query in queries:
        exact = [(d.doc_id, d.score) for d in approximate.top([query], 10, exact=True)[0]]
        assert [(d.doc_id, d.score) for d in exhaustive.top([query], 10)[0]] == exact
        assert {d.doc_id[0] for d in exhaustive.top([query], 60)[0]} == {"a", "b"}  # both shards' hits merged
        scores = dict(exact)
        for doc in approximate.top([query], 10)[0]:
            assert doc.doc_id not in scores or abs(scores[doc.doc_id] - doc.score) < 1e-3
    for store in (store_a, store_b):
        store.close()
