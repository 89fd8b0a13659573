"""FAISS index types from factory strings, on real embeddings of the small corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexes.storage.faiss import backend as faiss_backend


@pytest.fixture(scope="module")
def vectors(small_index: Path) -> np.ndarray:
    """The small corpus's MiniLM embeddings, in corpus order, as the session index's dense retriever holds them."""
    import faiss

    stored = faiss.read_index(str(small_index / "dense" / faiss_backend.FILE))
    return faiss.downcast_index(stored.index).reconstruct_n(0, stored.ntotal)


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF4,Flat"])
def test_factory_types_round_trip(vectors: np.ndarray, factory: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    faiss_backend.save(faiss_backend.build(vectors, factory), tmp_path)
    index = faiss_backend.FaissIndex(tmp_path)
    scores, rows = index.search(vectors[:5], 3)
    assert index.ntotal == len(vectors)
    assert rows[:, 0].tolist() == [0, 1, 2, 3, 4]  # every document is its own nearest neighbour
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4)


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF4,Flat"])
def test_chunk_by_chunk_builds_equal_one_shot_builds(vectors: np.ndarray, factory: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """What a build does as vectors arrive: a flat index takes each chunk at once, other types at the end."""
    builder = faiss_backend.IndexBuilder(factory, vectors.shape[1])
    for start in range(0, len(vectors), 7):
        builder.add(vectors[start:start + 7])
    assert builder.streams == (factory == "Flat") and builder.count == len(vectors)
    faiss_backend.save(builder.finish(), tmp_path / "chunks")
    faiss_backend.save(faiss_backend.build(vectors, factory), tmp_path / "once")
    chunked, once = faiss_backend.FaissIndex(tmp_path / "chunks"), faiss_backend.FaissIndex(tmp_path / "once")
    got, want = chunked.search(vectors[::3], 10), once.search(vectors[::3], 10)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(chunked.reconstruct(np.arange(len(vectors))), once.reconstruct(np.arange(len(vectors))))


@pytest.mark.parametrize(
    ("factory", "fragment"),
    [("IVF1000,Flat", "needs at least 1000 documents"), ("IVF4,PQ8", "256 documents"), ("Nonsense42", "invalid FAISS factory")],
)
def test_impossible_factories_are_refused_early(vectors: np.ndarray, factory: str, fragment: str) -> None:
    with pytest.raises(faiss_backend.FaissBuildError, match=fragment):
        faiss_backend.check_factory(factory, vectors.shape[1], len(vectors))
