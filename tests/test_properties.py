"""Property-based tests (hypothesis) of the corpus reader and the fusion code."""

from __future__ import annotations

import json
import math
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexes.storage.corpus import CorpusError, Skipped, iter_documents
from retrieval.search.fusion import FusionConfig, FusionError, ScoredDoc, fuse

ids = st.text(alphabet="abcdefgh", min_size=1, max_size=3)
runs = st.dictionaries(
    st.sampled_from(["bm25", "splade", "dense"]),
    st.lists(st.tuples(ids, st.floats(-1e6, 1e6, allow_nan=False)), max_size=20, unique_by=lambda t: t[0]),
    min_size=1,
).map(lambda d: {k: [ScoredDoc(i, s) for i, s in sorted(v, key=lambda t: -t[1])] for k, v in d.items()})


@given(runs, st.sampled_from(["rrf", "weighted"]), st.sampled_from(["minmax", "zscore"]), st.integers(1, 200))
def test_fusion_invariants(r, method, normalization, k) -> None:  # type: ignore[no-untyped-def]
    fused = fuse(r, FusionConfig(method=method, rrf_k=k, normalization=normalization))
    union = {d.doc_id for run in r.values() for d in run}
    assert len(fused) == len({d.doc_id for d in fused})
    assert {d.doc_id for d in fused} == union  # every candidate once, nothing invented
    assert all(math.isfinite(d.score) for d in fused)
    assert all(a.score >= b.score for a, b in zip(fused, fused[1:]))
    for doc in fused:  # explanations point at the real rank in each run
        for name, src in doc.sources.items():
            assert r[name][src.rank - 1].doc_id == doc.doc_id
    assert fused == fuse(r, FusionConfig(method=method, rrf_k=k, normalization=normalization))  # deterministic


@given(runs, st.dictionaries(st.sampled_from(["bm25", "splade", "dense"]),
                             st.floats(allow_nan=True, allow_infinity=True), min_size=1))
def test_fusion_weights_validated(r, weights) -> None:  # type: ignore[no-untyped-def]
    try:
        fused = fuse(r, FusionConfig(method="weighted", weights=weights))
    except FusionError:
        return
    assert all(math.isfinite(d.score) for d in fused)
    assert set(weights) <= set(r) and all(math.isfinite(w) and w >= 0 for w in weights.values())


line = st.one_of(
    st.binary(max_size=60),
    st.builds(lambda i, t: json.dumps({"_id": i, "text": t}).encode(), st.one_of(ids, st.integers(), st.none()),
              st.one_of(st.text(max_size=30), st.integers())),
    st.just(b'{"_id": "dup", "text": "x"}'),
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(line, max_size=12))
def test_corpus_reader_never_crashes(tmp_path: Path, lines: list[bytes]) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(b"\n".join(l.replace(b"\n", b" ") for l in lines))
    try:
        strict = list(iter_documents(corpus))
    except CorpusError as exc:
        assert str(corpus) in str(exc)
        strict = None
    skipped = Skipped()
    try:
        lenient = list(iter_documents(corpus, on_error="skip", skipped=skipped))
    except CorpusError as exc:
        assert "empty" in str(exc)
        return
    assert len({d.id for d in lenient}) == len(lenient)
    if strict is not None:
        assert strict == lenient and not skipped
