"""Pagination, min_score, fixed minmax bounds and explained contributions, on the real small index."""

from __future__ import annotations

import pytest

from retrieval.search.fusion import Adaptive, FusionConfig, FusionError
from retrieval.search.pipeline import SearchError

QUERIES = ["what similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft",
           "boundary layer transition at supersonic speeds"]
FUSIONS = {
    "rrf": FusionConfig("rrf"),
    "weighted-rrf": FusionConfig("rrf", weights={"bm25": 0.5, "dense": 2.0}),
    "minmax": FusionConfig("weighted", weights={"bm25": 0.2, "splade": 0.4, "dense": 0.4}),
    "zscore": FusionConfig("weighted", normalization="zscore"),
    "dbsf": FusionConfig("weighted", normalization="dbsf"),
    "bounds": FusionConfig("weighted", bounds={"dense": (0.0, 1.0), "splade": (0.0, 2000.0)}),
    "adaptive": FusionConfig("weighted", adaptive=Adaptive({"agreement": 2.0, "margin": -1.0})),
}


@pytest.mark.parametrize("name", [*FUSIONS, "single"])
def test_page_two_equals_the_same_ranks_of_one_larger_request(searcher, name: str) -> None:  # type: ignore[no-untyped-def]
    retrievers = ["dense"] if name == "single" else None
    fusion = FUSIONS.get(name)
    for query in QUERIES:
        whole = searcher.search(query, k=14, retrievers=retrievers, fusion=fusion, depth=30)
        page = searcher.search(query, k=7, offset=7, retrievers=retrievers, fusion=fusion, depth=30)
        assert [(h.id, h.score, h.rank) for h in page.hits] == [(h.id, h.score, h.rank) for h in whole.hits[7:14]]
        deep = searcher.search(query, k=5, offset=40, retrievers=retrievers, fusion=fusion, depth=30)  # past depth
        larger = searcher.search(query, k=45, retrievers=retrievers, fusion=fusion, depth=30)
        assert [h.id for h in deep.hits] == [h.id for h in larger.hits[40:45]]


@pytest.mark.parametrize("name", [*FUSIONS, "single"])
def test_the_fused_score_is_recomputed_from_explain(searcher, name: str) -> None:  # type: ignore[no-untyped-def]
    retrievers = ["splade"] if name == "single" else None
    fusion = FUSIONS.get(name)
    for query in QUERIES:
        result = searcher.search(query, k=20, retrievers=retrievers, fusion=fusion, explain=True)
        for hit in result.hits:
            assert hit.contributions is not None and set(hit.contributions) == set(result.retrievers)
            assert sum(hit.contributions.values()) == pytest.approx(hit.score, abs=1e-9)
            for retriever, source in (hit.explain or {}).items():
                if source is not None:
                    assert source.contribution == pytest.approx(hit.contributions[retriever], abs=1e-12)
                    weighted = fusion is not None and fusion.method == "weighted"
                    assert (source.normalized is not None) == weighted
                elif fusion is not None and fusion.method == "rrf":
                    assert hit.contributions[retriever] == 0.0
    # zscore gives a retriever that missed the hit the list's floor, which is negative: it still adds up
    result = searcher.search(QUERIES[0], k=60, fusion=FUSIONS["zscore"], explain=True)
    missed = [h for h in result.hits if any(s is None for s in (h.explain or {}).values())]
    assert missed and any(v < 0 for h in missed for n, v in (h.contributions or {}).items() if h.explain[n] is None)


def test_fixed_bounds_normalize_every_query_alike(searcher) -> None:  # type: ignore[no-untyped-def]
    fusion = FusionConfig("weighted", bounds={"dense": (0.0, 1.0)})
    result = searcher.search(QUERIES[1], k=30, retrievers=["bm25", "dense"], fusion=fusion, explain=True)
    for hit in result.hits:
        dense = (hit.explain or {})["dense"]
        if dense is not None:
            assert dense.normalized == pytest.approx(min(1.0, max(0.0, dense.score)))
        else:
            assert (hit.contributions or {})["dense"] == 0.0
    bad = [({"dense": (1.0, 0.0)}, "weighted", "minmax", "low < high"),
           ({"dense": (0.0, 1.0)}, "rrf", "minmax", "set method to weighted"),
           ({"dense": (0.0, 1.0)}, "weighted", "zscore", "set normalization to minmax"),
           ({"colbert": (0.0, 1.0)}, "weighted", "minmax", "not searched: colbert")]
    for bounds, method, norm, message in bad:
        with pytest.raises(FusionError, match=message):
            searcher.search("wing", fusion=FusionConfig(method, normalization=norm, bounds=bounds))  # type: ignore[arg-type]


def test_min_score_filters_before_the_page(searcher) -> None:  # type: ignore[no-untyped-def]
    whole = searcher.search(QUERIES[0], k=50, fusion=FUSIONS["minmax"])
    cut = whole.hits[12].score
    kept = searcher.search(QUERIES[0], k=50, fusion=FUSIONS["minmax"], min_score=cut)
    assert [h.id for h in kept.hits] == [h.id for h in whole.hits if h.score >= cut]
    page = searcher.search(QUERIES[0], k=5, offset=10, fusion=FUSIONS["minmax"], min_score=cut)
    assert [h.id for h in page.hits] == [h.id for h in kept.hits[10:15]]
    with pytest.raises(SearchError, match="offset must be >= 0"):
        searcher.search("wing", offset=-1)
    with pytest.raises(SearchError, match="min_score must be a finite number"):
        searcher.search("wing", min_score=float("nan"))


def test_client_vectors_equal_the_text_they_were_encoded_from(searcher) -> None:  # type: ignore[no-untyped-def]
    query = QUERIES[1]
    dense = searcher.searchers["dense"].encode_queries([query])[0]
    weights = searcher.searchers["splade"].encoder._encode([query], query=True, batch_size=1)[0]  # model weights
    by_text = searcher.search(query, k=10, retrievers=["splade", "dense"], explain=True)
    by_vectors = searcher.search("", k=10, retrievers=["splade", "dense"], explain=True,
                                 vectors={"dense": [list(map(float, dense * 3.0))], "splade": [weights]})
    assert [(h.id, h.score) for h in by_vectors.hits] == [(h.id, h.score) for h in by_text.hits]
    mixed = searcher.search(query, k=10, vectors={"dense": [dense.tolist()]})  # bm25 and splade from the text
    assert [h.id for h in mixed.hits] == [h.id for h in searcher.search(query, k=10).hits]
    bad = [({"dense": [[0.1, 0.2]]}, "has 2 dimensions; the index has 384"),
           ({"dense": [[0.0] * 384]}, "all zeros"),
           ({"splade": [{"wing": 1.0, "no-such-piece!": 2.0}]}, "token 'no-such-piece!' is not in the model's vocabulary"),
           ({"splade": [{"wing": -1.0}]}, "finite number from 0 to 10000"),
           ({"bm25": [[1.0]]}, "searches query text only"),
           ({"dense": [dense.tolist(), dense.tolist()]}, "2 query vectors for 'dense', for 1 queries")]
    for vectors, message in bad:
        with pytest.raises(SearchError, match=message):
            searcher.search(query, k=5, vectors=vectors)
    with pytest.raises(SearchError, match="query 0 is empty"):  # bm25 searched, and it has no vector
        searcher.search("", k=5, vectors={"dense": [dense.tolist()]})
