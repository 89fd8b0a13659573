"""Pseudo-relevance feedback and QPP-weighted fusion on the real small index.

BM25's RM3 and Rocchio must be Anserini's own (same hits and scores as Pyserini's searcher with the
same settings); dense PRF must be the query moved towards the stored vectors of its top hits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.core.types import PrfConfig
from retrieval.search.pipeline import SearchError

QUERIES = ["what similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft",
           "boundary layer transition at supersonic speeds", "heat transfer to a flat plate"]


def _ids(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [h.id for h in result.hits]


@pytest.mark.parametrize("method", ["rm3", "rocchio"])
def test_bm25_prf_is_anserinis_own(searcher, small_index: Path, method: str) -> None:  # type: ignore[no-untyped-def]
    from pyserini.search.lucene import LuceneSearcher

    from retrieval.core.jvm import JNI_LOCK

    reference = LuceneSearcher(str(small_index / "bm25"))
    with JNI_LOCK:
        reference.set_bm25(0.9, 0.4)
        if method == "rm3":
            reference.object.set_rm3(None, 7, 4, 0.6, False, True)
        else:
            reference.object.set_rocchio(None, 7, 4, 0, 0, 1.0, 0.5, 0.0, False, False)
    prf = PrfConfig(method, fb_docs=4, fb_terms=7, **({"original_weight": 0.6} if method == "rm3" else {"beta": 0.5}))
    changed = False
    for query in QUERIES:
        ours = searcher.search(query, k=20, retrievers=["bm25"], prf={"bm25": prf})
        with JNI_LOCK:
            theirs = reference.search(query, 20)
        assert _ids(ours) == [h.docid for h in theirs]
        assert [h.score for h in ours.hits] == pytest.approx([h.score for h in theirs], rel=1e-5)
        changed |= _ids(ours) != _ids(searcher.search(query, k=20, retrievers=["bm25"]))
    assert changed, "feedback changed no ranking"
    # The setting is per call: a plain search afterwards is plain BM25 again.
    plain = LuceneSearcher(str(small_index / "bm25"))
    with JNI_LOCK:
        plain.set_bm25(0.9, 0.4)
        expected = [h.docid for h in plain.search(QUERIES[0], 20)]
    assert _ids(searcher.search(QUERIES[0], k=20, retrievers=["bm25"])) == expected
    # Batches (Anserini's threaded batch search) agree with single searches.
    batch = searcher.batch_search(QUERIES, k=20, retrievers=["bm25"], prf={"bm25": prf})
    assert [_ids(r) for r in batch] == [_ids(searcher.search(q, k=20, retrievers=["bm25"], prf={"bm25": prf}))
                                        for q in QUERIES]


@pytest.mark.parametrize("prf", [PrfConfig("average"), PrfConfig("rocchio", fb_docs=2, alpha=0.5, beta=0.5)])
def test_dense_prf_moves_the_query_to_its_hits(searcher, small_index: Path, prf: PrfConfig) -> None:  # type: ignore[no-untyped-def]
    import faiss

    dense = searcher.searchers["dense"]
    index = faiss.read_index(str(small_index / "dense" / "index.faiss"))
    query = dense.encode_queries([QUERIES[1]])
    fb = prf.fb_docs or 3
    _, top = index.search(query, fb)
    stored = np.stack([index.reconstruct(int(d)) for d in top[0]])
    moved = (query[0] + stored.sum(0)) / (1 + fb) if prf.method == "average" else 0.5 * query[0] + 0.5 * stored.mean(0)
    moved /= np.linalg.norm(moved)
    scores, docnos = index.search(moved[None, :].astype(np.float32), 10)
    expected = searcher.store.ids_by_docno(docnos[0].tolist())
    result = searcher.search(QUERIES[1], k=10, retrievers=["dense"], prf={"dense": prf})
    assert _ids(result) == expected
    assert [h.score for h in result.hits] == pytest.approx(scores[0].tolist(), rel=1e-4)
    assert _ids(result) != _ids(searcher.search(QUERIES[1], k=10, retrievers=["dense"])) or prf.method == "rocchio"


def test_splade_prf_expands_with_stored_impacts(searcher) -> None:  # type: ignore[no-untyped-def]
    splade = searcher.searchers["splade"]
    query = QUERIES[2]
    vector = splade.encode_queries([query])[0]
    top = [h.id for h in searcher.search(query, k=3, retrievers=["splade"]).hits]
    stored = splade._index.doc_vectors(top)
    # The term vectors hold exactly the impacts the documents were indexed with.
    docs = searcher.store.get(top)
    assert stored == splade.encoder.encode_documents([docs[i].contents for i in top], splade.quantization)
    mix = {t: float(w) for t, w in vector.items()}
    for doc in stored:
        for t, w in doc.items():  # type: ignore[union-attr]
            mix[t] = mix.get(t, 0.0) + 0.5 * w / 3
    new = sorted((t for t in mix if t not in vector), key=lambda t: (-mix[t], t))[:20]
    expanded = {t: round(mix[t]) for t in [*vector, *new] if round(mix[t]) > 0}
    expected = [d.doc_id for d in splade._index.search(expanded, 10)]
    result = searcher.search(query, k=10, retrievers=["splade"], prf={"splade": PrfConfig("rocchio")})
    assert _ids(result) == expected and _ids(result) != _ids(searcher.search(query, k=10, retrievers=["splade"]))
    assert splade._index.doc_vectors(["no-such-id"]) == [None]


def test_prf_inside_a_hybrid_and_bad_settings(searcher) -> None:  # type: ignore[no-untyped-def]
    fused = searcher.search(QUERIES[0], k=10, prf={"bm25": PrfConfig("rm3"), "dense": PrfConfig("rocchio")}, explain=True)
    bm25 = searcher.search(QUERIES[0], k=100, retrievers=["bm25"], prf={"bm25": PrfConfig("rm3")})
    top = fused.hits[0]
    if top.explain and top.explain.get("bm25"):
        assert top.explain["bm25"].rank == _ids(bm25).index(top.id) + 1  # explain shows the PRF run's rank
    cases = [
        ({"splade": PrfConfig("rm3")}, "has no PRF method 'rm3'; it offers: rocchio"),
        ({"bm25": PrfConfig("average")}, "it offers: rm3, rocchio"),
        ({"bm25": PrfConfig("rm3", alpha=0.5)}, "takes fb_docs, fb_terms, original_weight, not alpha"),
        ({"bm25": PrfConfig("rm3", fb_docs=1000)}, "fb_docs must be between 1 and 100"),
        ({"bm25": PrfConfig("rm3", original_weight=2.0)}, "original_weight"),
        ({"colbert": PrfConfig("rm3")}, "does not search"),
    ]
    for prf, fragment in cases:
        with pytest.raises(SearchError) as error:
            searcher.search("wing", k=3, prf=prf)
        assert fragment in str(error.value)


