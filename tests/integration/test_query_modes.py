"""Query modes on the real small index: ONNX Runtime query encoders and inference-free SPLADE queries.

ONNX graphs must give torch's query vectors (fp32: cosine >= 0.999; int8: close enough that rankings
barely move), be exported once and reused. ``tokens`` queries must be the query's word pieces weighted by
the index's own IDF, and Lucene must score them as the dot product with the stored impacts.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from retrieval.core.options import OpenOptions
from retrieval.core.settings import Settings
from retrieval.search.pipeline import Searcher, SearchError

QUERIES = ["what similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft",
           "boundary layer transition at supersonic speeds", "heat transfer to a flat plate", "wing flutter"]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _sparse_cosine(a: dict[str, int], b: dict[str, int]) -> float:
    dot = sum(w * b.get(t, 0) for t, w in a.items())
    return dot / math.sqrt(sum(w * w for w in a.values()) * sum(w * w for w in b.values()))


@pytest.mark.parametrize("mode, floor", [("onnx", 0.999), ("onnx-int8", 0.95)])
def test_onnx_dense_vectors_match_torch(searcher: Searcher, mode: str, floor: float) -> None:
    dense = searcher.searchers["dense"]
    torch_vectors = dense.encode_queries(QUERIES)  # type: ignore[attr-defined]
    onnx_batch = dense.encode_queries(QUERIES, mode)  # type: ignore[attr-defined]
    onnx_single = np.stack([dense.encode_queries([q], mode)[0] for q in QUERIES])  # type: ignore[attr-defined]
    for t, b, s in zip(torch_vectors, onnx_batch, onnx_single):
        assert _cosine(t, b) >= floor and _cosine(t, s) >= floor
        if mode == "onnx":
            np.testing.assert_allclose(b, s, atol=1e-5)  # padding in a batch changes nothing
        else:  # int8 activations are quantized with one scale per batch, so batch-mates move a query a little
            assert _cosine(b, s) >= 0.98
        assert abs(float(np.linalg.norm(b)) - 1.0) < 1e-5


@pytest.mark.parametrize("mode, floor", [("onnx", 0.999), ("onnx-int8", 0.95)])
def test_onnx_splade_vectors_match_torch(searcher: Searcher, mode: str, floor: float) -> None:
    splade = searcher.searchers["splade"]
    torch_vectors = splade.encode_queries(QUERIES)  # type: ignore[attr-defined]
    onnx_vectors = splade.encode_queries(QUERIES, mode)  # type: ignore[attr-defined]
    for t, o in zip(torch_vectors, onnx_vectors):
        assert all(isinstance(w, int) and w > 0 for w in o.values())
        assert _sparse_cosine(t, o) >= floor
    if mode == "onnx":  # fp32: the same integer impacts up to rounding at the .5 boundary
        for t, o in zip(torch_vectors, onnx_vectors):
            assert set(t) ^ set(o) <= {k for k, w in {**t, **o}.items() if w <= 1}
            assert max(abs(t.get(k, 0) - o.get(k, 0)) for k in {*t, *o}) <= 1


def test_onnx_graphs_are_cached_and_reused(searcher: Searcher) -> None:
    from retrieval.encoders.models import weights_fingerprint
    from retrieval.encoders.onnx_query import ONNX_MODES, OnnxQueryEncoder, graph_path

    encoder = searcher.searchers["dense"].encoder  # type: ignore[attr-defined]
    cache = searcher.folder.parent.parent / ".onnx"  # INDEX_ROOT/.onnx: the index itself is INDEX_ROOT/.versions/...
    assert searcher.folder.parent.name == ".versions"
    encoder.encode_queries(["warm"], runtime="onnx-int8", cache=cache)
    paths = {v: graph_path(cache, encoder.model_info, v) for v in ONNX_MODES.values()}
    assert all(p.is_file() and p.stat().st_size > 1_000_000 for p in paths.values())
    assert paths["int8"].stat().st_size < paths["fp32"].stat().st_size / 2
    stamps = {v: p.stat().st_mtime_ns for v, p in paths.items()}
    again = OnnxQueryEncoder(encoder.model, encoder.model_info, "fp32", cache)  # as a second process would
    assert again.path == paths["fp32"] and {v: p.stat().st_mtime_ns for v, p in paths.items()} == stamps
    assert not list(paths["fp32"].parent.glob(".*.tmp"))  # no half-written export left behind
    # The model's own folder is untouched: its weights fingerprint (which the index checks) stays the same.
    assert weights_fingerprint(encoder.model_info.path) == encoder.model_info.weights_sha256


@pytest.mark.parametrize("mode", ["onnx", "onnx-int8"])
def test_onnx_modes_keep_the_rankings(searcher: Searcher, mode: str) -> None:
    for query in QUERIES:
        base = searcher.search(query, k=10, retrievers=["splade", "dense"])
        moded = searcher.search(query, k=10, retrievers=["splade", "dense"],
                                query_modes={"splade": mode, "dense": mode})
        overlap = len({h.id for h in base.hits} & {h.id for h in moded.hits})
        assert overlap >= (10 if mode == "onnx" else 8), (query, overlap)


def test_tokens_mode_is_word_pieces_weighted_by_the_index_idf(searcher: Searcher, small_index: Path) -> None:
    from indexes.storage.lucene.backend import document_impacts

    splade = searcher.searchers["splade"]
    tokenizer = splade.encoder.model.tokenizer  # type: ignore[attr-defined]
    impacts = document_impacts(small_index / "splade")  # read from the postings, not from Lucene's statistics
    count = len(impacts)
    for query in QUERIES:
        pieces = list(dict.fromkeys(tokenizer.tokenize(query)))
        expected = {}
        for piece in pieces:
            df = sum(piece in stored for stored in impacts.values())
            if df:
                expected[piece] = round(math.log(1 + (count - df + 0.5) / (df + 0.5)) * 100)
        vector = splade.token_query(query)  # type: ignore[attr-defined]
        assert vector == {t: w for t, w in expected.items() if w > 0}
        result = searcher.search(query, k=10, retrievers=["splade"], query_modes={"splade": "tokens"})
        assert result.hits, query
        scores = {doc: sum(w * stored.get(t, 0) for t, w in vector.items()) for doc, stored in impacts.items()}
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        assert [h.id for h in result.hits] == [d for d, s in ranked[: len(result.hits)] if s > 0]
        for hit in result.hits:
            assert hit.score == pytest.approx(scores[hit.id], abs=1e-3 * len(result.hits))


def test_tokens_mode_costs_no_model_run(searcher: Searcher) -> None:
    result = searcher.search(QUERIES[0], k=5, retrievers=["splade"], query_modes={"splade": "tokens"})
    torch_result = searcher.search(QUERIES[0], k=5, retrievers=["splade"])
    assert result.timings_ms["splade_encode"] < torch_result.timings_ms["splade_encode"]
    assert result.hits[0].id == torch_result.hits[0].id  # the topical document wins either way on this query


def test_mode_errors_name_what_to_fix(searcher: Searcher) -> None:
    with pytest.raises(SearchError, match="'bm25' .*no query mode 'onnx'.*offers: none"):
        searcher.search("wing", retrievers=["bm25"], query_modes={"bm25": "onnx"})
    with pytest.raises(SearchError, match="no query mode 'fast'.*torch, onnx, onnx-int8, tokens"):
        searcher.search("wing", retrievers=["splade"], query_modes={"splade": "fast"})
    with pytest.raises(SearchError, match="query_mode names 'dense', which this request does not search"):
        searcher.search("wing", retrievers=["splade"], query_modes={"dense": "onnx"})


def test_default_modes_come_from_the_options(small_index: Path, searcher: Searcher) -> None:
    settings = Settings(query_modes="splade=tokens,dense=onnx-int8")  # type: ignore[arg-type]
    assert settings.query_modes == {"splade": "tokens", "dense": "onnx-int8"}
    moded = Searcher.open(small_index, OpenOptions.from_settings(settings), retrievers=["splade", "dense"])
    try:
        for query in QUERIES[:2]:
            got = moded.search(query, k=10)
            want = searcher.search(query, k=10, retrievers=["splade", "dense"],
                                   query_modes={"splade": "tokens", "dense": "onnx-int8"})
            assert [(h.id, h.score) for h in got.hits] == [(h.id, h.score) for h in want.hits]
            torch_way = moded.search(query, k=10, query_modes={"splade": "torch", "dense": "torch"})
            plain = searcher.search(query, k=10, retrievers=["splade", "dense"])
            assert [(h.id, h.score) for h in torch_way.hits] == [(h.id, h.score) for h in plain.hits]
    finally:
        moded.close()
    with pytest.raises(SearchError, match="default query mode: .*'bm25' .*no query mode 'tokens'"):
        Searcher.open(small_index, OpenOptions(query_modes={"bm25": "tokens"}), retrievers=["bm25"])
