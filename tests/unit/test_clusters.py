"""The approximate SPLADE structure on its own (indexes/storage/sparse/clusters.py through the impact matrix): exact
scores for the hits it returns, the exhaustive answer when every cluster is scored, ties, live rows beside the
clusters and folded in at a checkpoint, deletes, filters, a file that does not match, and the tuning that picks
``probes``. Synthetic impacts of topics; built indexes are searched in tests/integration/test_approx_sparse.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexes.storage.sparse import clusters, impact_matrix, tuning
from indexes.storage.sparse.impact_matrix import ImpactMatrix, MatrixWriter

VOCAB = [f"t{i}" for i in range(300)]


def topic_vectors(count: int, seed: int = 3) -> list[dict[str, int]]:
    """Documents drawn from 50 topics of 40 terms: 25 terms each, integer impacts 1-199 (clusters exist)."""
    rng = np.random.default_rng(seed)
    topics = [rng.choice(300, 40, replace=False) for _ in range(50)]
    return [{VOCAB[t]: int(rng.integers(1, 200)) for t in rng.choice(topics[rng.integers(50)], 25, replace=False)}
            for _ in range(count)]


def topic_queries(count: int, seed: int = 5) -> list[dict[str, int]]:
    rng = np.random.default_rng(seed)
    return [{VOCAB[t]: int(rng.integers(1, 100)) for t in rng.choice(300, 10, replace=False)} for _ in range(count)]


def clustered(folder: Path, vectors: list[dict[str, int]]) -> ImpactMatrix:
    writer = MatrixWriter(folder / impact_matrix.FOLDER)
    for vector in vectors:
        writer.add(vector)
    writer.close()
    assert ImpactMatrix(folder).cluster() == f"{impact_matrix.FOLDER}/{clusters.FILE}"
    return ImpactMatrix(folder)


def ranked(pairs: list[tuple[float, int]]) -> list[tuple[float, int]]:
    return sorted(pairs, key=lambda p: (-p[0], p[1]))


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> ImpactMatrix:
    return clustered(tmp_path_factory.mktemp("clusters"), topic_vectors(6000))


def test_hits_carry_exact_scores_and_every_cluster_gives_the_exact_answer(matrix: ImpactMatrix) -> None:
    assert matrix.clusters is not None and 100 < matrix.clusters.count < 400  # about 32 rows a cluster
    recalls = {4: [], 32: []}
    for query in topic_queries(100):
        exact = ranked(matrix.search(query, 10))
        scores = dict((d, s) for s, d in matrix.search(query, 6000))  # every matching row's exact score
        for probes, found in recalls.items():
            approx = matrix.search(query, 10, probes=probes)
            assert all(scores[d] == s for s, d in approx)  # a hit's score is its exact dot product
            found.append(sum(s >= exact[min(9, len(exact) - 1)][0] for s, _ in approx) / min(10, len(exact)))
        # Scoring every cluster is the exhaustive search: the same hits, ties at the cut included.
        assert ranked(matrix.search(query, 10, probes=matrix.clusters.count)) == exact
    assert np.mean(recalls[4]) < np.mean(recalls[32]) and np.mean(recalls[32]) >= 0.9


def test_ties_at_the_cut_come_back_whole(tmp_path: Path) -> None:
    vectors = topic_vectors(400) + [{"tie": 150, "t1": 1}] * 5 + [{"tie": 150}] * 3
    found = clustered(tmp_path, vectors)
    assert found.clusters is not None
    # Eight documents score 300: a search for 2 returns every tie at its cut, as the exhaustive search does.
    assert sorted(d for _, d in found.search({"tie": 2}, 2)) == list(range(400, 408))
    assert sorted(found.search({"tie": 2}, 2, probes=found.clusters.count)) == sorted(found.search({"tie": 2}, 2))
    fewer = found.search({"tie": 2}, 2, probes=1)  # the ties among the rows scored, each with its exact score
    assert fewer and {s for s, _ in fewer} == {300.0} and {d for _, d in fewer} <= set(range(400, 408))


def test_live_rows_are_searched_beside_the_clusters_then_folded_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                    ) -> None:
    base = clustered(tmp_path, topic_vectors(2000))
    assert base.clusters is not None
    count = base.clusters.count
    fresh = {"fresh": 50, "t3": 20}
    base.append([2000, 2001], [fresh, {"t3": 1}])
    # Searchable at once through the exact tail, with few probes.
    assert base.search({"fresh": 1}, 5, probes=1) == [(50.0, 2000)]
    base.commit(7)  # below the fold bounds: a new part, the clusters unchanged
    assert base.clusters.count == count and len(base._blocks) == 2
    again = ImpactMatrix(tmp_path)
    assert again.search({"fresh": 1}, 5, probes=1) == [(50.0, 2000)] and again.rows == 2002
    monkeypatch.setattr(clusters, "FOLD_MIN_ROWS", 10)
    monkeypatch.setattr(clusters, "FOLD_SHARE", 0.05)
    again.append(list(range(2002, 2200)), topic_vectors(198, seed=9))
    files = again.commit(8)  # past the bounds: every row clustered again, one block
    assert f"{impact_matrix.FOLDER}/{clusters.FILE}" in files
    assert len(again._blocks) == 1 and again.clusters is not None and again.clusters.count > count
    reopened = ImpactMatrix(tmp_path)
    assert reopened.rows == 2200 and len(reopened._blocks) == 1
    query = topic_queries(1)[0]
    assert ranked(reopened.search(query, 10, probes=reopened.clusters.count)) == ranked(again.search(query, 10))  # type: ignore[union-attr]
    assert reopened.search({"fresh": 1}, 5, probes=1) == [(50.0, 2000)]


def test_deletes_and_filters_are_honoured(matrix: ImpactMatrix) -> None:
    query = topic_queries(3)[2]
    top = ranked(matrix.search(query, 5, probes=16))
    gone = top[0][1]
    bitmap = np.packbits(np.arange(6000) != gone, bitorder="little")
    assert gone not in [d for _, d in matrix.search(query, 5, bitmap=bitmap, probes=16)]
    allowed = np.zeros(6000, dtype=bool)
    allowed[::50] = True  # 2% of the rows: the approximate search widens to about as many matches as usual
    hits = matrix.search(query, 10, allowed=allowed, probes=16)
    assert hits and all(d % 50 == 0 for _, d in hits)
    assert ranked(hits)[:10] == ranked(matrix.search(query, 10, allowed=allowed))[:10]
    assert matrix.search(query, 10, allowed=np.zeros(6000, dtype=bool), probes=16) == []


def test_a_clusters_file_that_does_not_match_is_not_used(tmp_path: Path) -> None:
    clustered(tmp_path, topic_vectors(300))
    stored = clusters.read(tmp_path / impact_matrix.FOLDER)
    assert stored is not None
    # A file claiming other rows (as after a restore of another matrix's parts): searched exactly, never wrongly.
    np.savez(tmp_path / impact_matrix.FOLDER / clusters.FILE, docnos=stored.docnos + 1, starts=stored.starts,
             cptr=stored.cptr, cterms=stored.cterms, cweights=stored.cweights, vocab=stored.vocab,
             meta=np.array('{"parts": 1}'))
    reopened = ImpactMatrix(tmp_path)
    assert reopened.clusters is None and reopened.rows == 300
    query = topic_queries(1)[0]
    assert ranked(reopened.search(query, 5, probes=1)) == ranked(reopened.search(query, 5))


def test_tuning_picks_the_cheapest_probes_that_reach_the_target(matrix: ImpactMatrix) -> None:
    queries = tuning.sample_queries(matrix, 60)
    assert len(queries) == 60 and all(0 < len(q) <= tuning.SAMPLE_TERMS for q in queries)
    measured = tuning.measure(matrix, queries, 0.9)
    assert measured is not None and measured.reached and measured.recall >= 0.9
    tried = [g["parameters"]["probes"] for g in measured.grid]
    assert tried == sorted(tried) and tried[-1] == measured.probes
    assert all(g["recall_at_10"] < 0.9 for g in measured.grid[:-1])  # nothing cheaper reaches it
    everything = tuning.measure(matrix, queries, 1.0)
    assert everything is not None and everything.recall == 1.0 and everything.probes <= matrix.clusters.count  # type: ignore[union-attr]
