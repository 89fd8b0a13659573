"""The in-memory SPLADE matrix on its own (indexes/storage/sparse/impact_matrix.py): its files, parts, merges, removals
and checkpoints, and the compiled top-k against a full sort and the numpy version, on synthetic impacts. Searched
against Lucene on real indexes in tests/integration/test_impact_matrix.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexes.storage.sparse import impact_matrix
from indexes.storage.sparse.impact_matrix import ImpactMatrix, MatrixWriter


def test_matrix_files_parts_merges_ties_and_removals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(impact_matrix, "PART_NNZ", 5)
    writer = MatrixWriter(tmp_path / impact_matrix.FOLDER)
    vectors = [{"a": 3, "b": 1}, {"a": 3, "b": 1}, {"c": 7}, {"a": 1, "c": 2}, {"b": 4}, {"a": 3, "b": 1}]
    for v in vectors:
        writer.add(v)
    writer.close()
    assert len(list((tmp_path / impact_matrix.FOLDER).glob("part-*.npz"))) == 2
    matrix = ImpactMatrix(tmp_path)
    assert (matrix.rows, matrix.nnz, matrix.max_docno) == (6, 10, 5)
    # Docs 0, 1 and 5 tie at 7 (3*2 + 1*1) for k=1: all three come back for the caller to order by id.
    assert sorted(matrix.search({"a": 2, "b": 1}, 1)) == [(7.0, 0), (7.0, 1), (7.0, 5)]
    assert matrix.search({"zzz": 5}, 3) == []
    for i in range(impact_matrix.MERGE_BLOCKS + 2):  # more blocks than the merge threshold
        matrix.append([6 + i], [{"a": 10, f"new{i}": 1}])
    matrix.append([6], [{"a": 99}])  # a replayed write: skipped
    assert matrix.rows == 6 + impact_matrix.MERGE_BLOCKS + 2
    assert matrix.search({"new3": 5}, 5) == [(5.0, 9)]
    assert [d for _, d in matrix.search({"a": 1}, 2)] == [6, 7, 8, 9, 10, 11, 12, 13, 14, 15]  # ties at the cut
    bitmap = np.packbits(np.array([i != 7 for i in range(16)]), bitorder="little")
    assert 7 not in [d for _, d in matrix.search({"a": 1}, 20, bound=15, bitmap=bitmap)]
    assert 15 not in [d for _, d in matrix.search({"a": 1}, 20, bound=15)]
    matrix.remove([6, 8])
    files = matrix.commit(4)
    assert "matrix/removed.npy" in files and "matrix/state.json" in files
    again = ImpactMatrix(tmp_path)
    assert again.seq == 4 and again.rows == matrix.rows
    assert sorted(d for _, d in again.search({"a": 1}, 20)) == [0, 1, 3, 5, 7, *range(9, 16)]
    writer_only = ImpactMatrix(tmp_path, rows=False)
    assert (writer_only.max_docno, writer_only.searchable) == (15, False)



def test_top_k_over_many_rows_equals_a_full_sort(tmp_path: Path) -> None:
    """Past :data:`top_k.BLOCK` rows per k the search looks only above a bound from the blocks' maxima;
    it must still return exactly the top k and every tie at the cut."""
    rng = np.random.default_rng(11)
    vocab = [f"t{i}" for i in range(40)]
    vectors = [{vocab[t]: int(w) for t, w in zip(rng.choice(40, 6, replace=False), rng.integers(1, 30, 6))}
               for _ in range(30_000)]
    writer = MatrixWriter(tmp_path / impact_matrix.FOLDER)
    for v in vectors:
        writer.add(v)
    writer.close()
    matrix = ImpactMatrix(tmp_path)
    dense = np.zeros((len(vectors), len(vocab)), dtype=np.float64)
    for row, v in enumerate(vectors):
        for t, w in v.items():
            dense[row, vocab.index(t)] = w
    live = np.ones(len(vectors), dtype=bool)
    live[rng.choice(len(vectors), 3000, replace=False)] = False
    for k in (1, 10, 25):
        for _ in range(5):
            query = {vocab[t]: int(w) for t, w in zip(rng.choice(40, 4, replace=False), rng.integers(1, 20, 4))}
            q = np.array([query.get(t, 0) for t in vocab], dtype=np.float64)
            for bitmap in (None, np.packbits(live, bitorder="little")):
                scores = dense @ q
                if bitmap is not None:
                    scores[~live] = 0
                cut = np.sort(scores[scores > 0])[-k]
                want = sorted((float(s), int(d)) for d, s in enumerate(scores) if s >= cut)
                assert sorted(matrix.search(query, k, bitmap=bitmap)) == want



def test_a_failed_checkpoint_keeps_its_rows_for_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    MatrixWriter(tmp_path / impact_matrix.FOLDER).close()
    matrix = ImpactMatrix(tmp_path)
    matrix.append([0, 1], [{"a": 1}, {"b": 2}])
    real = impact_matrix.write_part

    def full_disk(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(impact_matrix, "write_part", full_disk)
    with pytest.raises(OSError):
        matrix.commit(1)
    monkeypatch.setattr(impact_matrix, "write_part", real)
    matrix.append([2], [{"c": 3}])
    matrix.commit(2)
    again = ImpactMatrix(tmp_path)
    assert (again.rows, again.seq) == (3, 2)
    assert again.search({"a": 1, "b": 1, "c": 1}, 3) == [(1.0, 0), (2.0, 1), (3.0, 2)]



def test_compiled_top_k_equals_the_numpy_version() -> None:
    """The numba kernel (scoring, mask, block bound, cut) and the scipy/numpy path used without numba agree, rows and
    scores, ties at the cut included; columns the block lacks (-1, or past its width) add nothing."""
    from scipy import sparse

    rng = np.random.default_rng(7)
    for rows in (5, 900, 5000):
        dense = rng.integers(0, 40, (rows, 30)) * (rng.random((rows, 30)) < 0.15)
        block = sparse.csc_matrix(dense.astype(np.uint16))
        for k in (1, 3, 10):
            columns = np.array([*rng.choice(30, 6, replace=False), -1, 99], dtype=np.int64)
            weights = rng.integers(1, 9, len(columns)).astype(np.float32)
            for mask in (None, rng.random(rows) < 0.7):
                got = impact_matrix.block_top(block, columns, weights, mask, k)
                want = impact_matrix._block_top_numpy(block, columns, weights,
                                                      impact_matrix._NO_MASK if mask is None else mask, k)
                assert sorted(zip(got[1].tolist(), got[0].tolist())) == sorted(zip(want[1].tolist(), want[0].tolist()))
                scores = dense[:, columns[:6]] @ weights[:6] * (1 if mask is None else mask)
                assert len(got[0]) >= min(k, int((scores > 0).sum()))
