"""Scores from the real engines equal what they should be computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from indexes.storage.docstore.corpus import iter_documents
from retrieval.search.fusion import FusionConfig

QUERY = "similarity laws for aeroelastic models of heated high speed aircraft"


def test_impact_scores_are_dot_products_of_quantized_vectors(searcher, small_corpus) -> None:  # type: ignore[no-untyped-def]
    splade = searcher.searchers["splade"]
    docs = {d.id: d for d in iter_documents(small_corpus)}
    result = searcher.search(QUERY, k=10, retrievers=["splade"])
    assert len(result.hits) == 10
    query_vec = splade.encoder.encode_queries([QUERY], splade.quantization)[0]
    doc_vecs = splade.encoder.encode_documents([docs[h.id].contents for h in result.hits], splade.quantization)
    for hit, doc_vec in zip(result.hits, doc_vecs):
        dot = sum(w * doc_vec.get(t, 0) for t, w in query_vec.items())
        assert hit.score == dot
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)


def test_faiss_scores_are_cosine_similarities(searcher, small_corpus) -> None:  # type: ignore[no-untyped-def]
    dense = searcher.searchers["dense"]
    docs = {d.id: d for d in iter_documents(small_corpus)}
    result = searcher.search(QUERY, k=len(docs), retrievers=["dense"])
    assert len(result.hits) == len(docs)
    q = dense.encoder.model.encode_query([QUERY], convert_to_numpy=True)[0]
    d = dense.encoder.model.encode_document([docs[h.id].contents for h in result.hits], convert_to_numpy=True)
    cosine = d @ q / (np.linalg.norm(d, axis=1) * np.linalg.norm(q))
    np.testing.assert_allclose([h.score for h in result.hits], cosine, atol=1e-4)


def test_bm25_matches_pyserini_lucene_searcher(searcher, small_index) -> None:  # type: ignore[no-untyped-def]
    from pyserini.search.lucene import LuceneSearcher

    reference = LuceneSearcher(str(small_index / "bm25"))
    reference.set_bm25(0.9, 0.4)
    for query in (QUERY, "boundary layer", 'wing AND "flow" (heat* title:x~2'):
        ours = searcher.search(query, k=20, retrievers=["bm25"]).hits
        theirs = reference.search(query, 20)
        assert [(h.id, round(h.score, 4)) for h in ours] == [(h.docid, round(h.score, 4)) for h in theirs]
    assert len(searcher.search(QUERY, k=20, retrievers=["bm25"]).hits) > 0


def test_hybrid_batch_equals_single_and_explains(searcher) -> None:  # type: ignore[no-untyped-def]
    queries = [QUERY, "heat transfer in laminar boundary layers", "supersonic wing flutter"]
    config = FusionConfig(method="weighted", weights={"splade": 0.6, "dense": 0.4, "bm25": 0.2}, normalization="zscore")
    batch = searcher.batch_search(queries, k=5, fusion=config, explain=True)
    for query, result in zip(queries, batch):
        single = searcher.search(query, k=5, fusion=config, explain=True)
        assert [h.id for h in single.hits] == [h.id for h in result.hits]
        for a, b in zip(single.hits, result.hits):
            assert a.score == pytest.approx(b.score, rel=1e-5)
        assert set(result.hits[0].explain) == {"bm25", "splade", "dense"}
        assert any(v is not None for v in result.hits[0].explain.values())


def test_rrf_hits_fuse_per_retriever_ranks(searcher) -> None:  # type: ignore[no-untyped-def]
    result = searcher.search(QUERY, k=5, explain=True, fusion=FusionConfig(rrf_k=60))
    for hit in result.hits:
        expected = sum(1 / (60 + s.rank) for s in hit.explain.values() if s is not None)
        assert hit.score == pytest.approx(expected)
    assert [h.rank for h in result.hits] == [1, 2, 3, 4, 5]


def test_search_errors(searcher) -> None:  # type: ignore[no-untyped-def]
    from retrieval.search.pipeline import SearchError

    for kwargs in ({"k": 0}, {"retrievers": ["colbert"]}, {"depth": 0}):
        with pytest.raises(SearchError):
            searcher.search(QUERY, **kwargs)
    with pytest.raises(SearchError):
        searcher.search("   ")


def test_model_mismatch_is_refused(small_index, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import shutil

    from retrieval.encoders.models import ModelError
    from retrieval.search.pipeline import Searcher

    copy = tmp_path / "copy"
    shutil.copytree(small_index, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["retrievers"]["dense"]["weights_sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="other weights"):
        Searcher.open(copy, retrievers=["dense"])


def test_single_query_fast_path_equals_encode_query(searcher) -> None:  # type: ignore[no-untyped-def]
    """Single queries skip encode_query's batching; the vectors must be exactly what it returns."""
    from indexes.storage.docstore.corpus import read_jsonl_objects
    from tests.support import CRANFIELD

    splade, dense = searcher.searchers["splade"], searcher.searchers["dense"]
    queries = [obj["text"] for _, obj in read_jsonl_objects(CRANFIELD / "queries.jsonl.gz")][:40]
    assert splade.encoder.single_query_fast_path and dense.encoder.single_query_fast_path
    batch_sparse = splade.encoder.encode_queries(queries, splade.quantization)
    batch_dense = dense.encoder.encode_queries(queries)
    for i, query in enumerate(queries):
        assert splade.encoder.encode_queries([query], splade.quantization)[0] == batch_sparse[i]
        np.testing.assert_allclose(dense.encoder.encode_queries([query])[0], batch_dense[i], atol=1e-6)

