"""Property-based tests (hypothesis) of the corpus reader and the fusion code."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexes.storage.docstore.corpus import CorpusError, Skipped, iter_documents
from retrieval.core.runs import Run
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


# Runs of one document store: ids named after their docnos (not in docno order as strings: "d10" < "d9"), few
# distinct scores, so fused ties are common and the page's cut often falls inside one.
space_runs = st.dictionaries(
    st.sampled_from(["bm25", "splade", "dense"]),
    st.lists(st.tuples(st.integers(0, 40), st.sampled_from([0.5, 1.0, 2.0, 3.0, 7.25])), max_size=25,
             unique_by=lambda t: t[0]),
    min_size=1,
).map(lambda d: {k: sorted(v, key=lambda t: (-t[1], f"d{t[0]}")) for k, v in d.items()})


@settings(max_examples=300, deadline=None)
@given(space_runs, st.sampled_from([("rrf", "minmax"), ("weighted", "minmax"), ("weighted", "zscore"),
                                    ("weighted", "dbsf")]),
       st.integers(1, 100), st.one_of(st.none(), st.integers(1, 30)), st.booleans(),
       st.one_of(st.none(), st.just({"dense": 0.5}), st.just({"bm25": 2.0, "splade": 0.0})))
def test_runs_of_one_store_fuse_as_lists(r, method, k, limit, explain, weights) -> None:  # type: ignore[no-untyped-def]
    """The compiled path (:class:`Run`s of one store) gives the plain lists' answer: same ids, order, scores to the
    bit, and the same explanations."""
    weights = {n: w for n, w in (weights or {}).items() if n in r} or None
    if weights and all(w == 0 for w in weights.values()) and set(weights) == set(r):
        weights = None
    space = object()
    columnar = {n: Run(np.array([d for d, _ in v], dtype=np.int64), [f"d{d}" for d, _ in v], [s for _, s in v], space)
                for n, v in r.items()}
    plain = {n: [ScoredDoc(f"d{d}", s) for d, s in v] for n, v in r.items()}
    config = FusionConfig(method=method[0], normalization=method[1], rrf_k=k, weights=weights)
    fast, slow = fuse(columnar, config, limit, explain), fuse(plain, config, limit, explain)
    assert [(d.doc_id, d.score, d.sources, d.contributions) for d in fast] == \
        [(d.doc_id, d.score, d.sources, d.contributions) for d in slow]
    mixed = {**columnar, next(iter(r)): plain[next(iter(r))]}  # a Lucene list beside Runs: the list path, same answer
    assert [(d.doc_id, d.score, d.sources) for d in fuse(mixed, config, limit, explain)] == \
        [(d.doc_id, d.score, d.sources) for d in slow]
    assert all(columnar[n] == plain[n] for n in r)  # and a Run reads as its hits


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
