"""Anserini's order and score rounding redone outside Lucene (indexes/storage/lucene/direct.py, anserini_order.py): tie
rounding by hand and against the float32 version, and the compiled order against the Python one. Lucene itself is
compared in tests/integration/test_lucene_direct.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from indexes.storage.lucene.direct import tie_adjusted


def test_tie_adjusted_by_hand() -> None:
    f = lambda x: float(np.float32(x))  # noqa: E731
    assert tie_adjusted([7.0, 5.0, 5.0, 5.0, 3.0]) == [7.0, 5.0, f(5.0 - 1e-6), f(5.0 - 2e-6), 3.0]
    # float32 4.16315 is 4.16314983...: double arithmetic rounds it down (float32 arithmetic would give 4.1632)
    assert tie_adjusted([4.16315, 1.0]) == [f(4.1631), 1.0]
    assert tie_adjusted([]) == []



def test_tie_adjusted_equals_the_float32_array_version() -> None:
    """The plain-Python fast path gives what the numpy float32 version gives, near-ties and long runs included."""
    from indexes.storage.lucene.direct import _tie_adjusted_exact

    rng = np.random.default_rng(5)
    cases = [sorted(rng.integers(1, 40, n).astype(float).tolist(), reverse=True) for n in (1, 2, 10, 24, 25, 100, 300)]
    cases += [sorted(rng.random(n).astype(np.float32).tolist(), reverse=True) for n in (3, 10, 100, 1000)]
    cases += [sorted((rng.integers(0, 50, n) * 1e-4 + rng.integers(0, 3, n) * 1e-6 + 3.0).astype(np.float32).tolist(),
                     reverse=True) for n in (5, 10, 20, 24, 100, 400)]  # gaps around the 1e-4 threshold
    for scores in cases:
        a = np.asarray(scores, dtype=np.float32)
        rounded = (np.floor(a.astype(np.float64) * 1e4 + 0.5) / 1e4).astype(np.float32)
        want = _tie_adjusted_exact(rounded.tolist())
        assert tie_adjusted(scores) == want



def test_compiled_anserini_order_equals_the_python_one(tmp_path: Path) -> None:
    """The in-memory SPLADE search's ranking (one compiled sort and rounding, ids compared only inside runs of equal
    scores) gives :func:`anserini_ranked`'s hits, order and scores, on ids whose string order is not docno order,
    with ties at the cut, near-ties around the 1e-4 rounding step and runs of ties longer than the page."""
    from indexes.storage.docstore.corpus import Document
    from indexes.storage.docstore.store import DocStore
    from indexes.storage.lucene.direct import anserini_ranked, anserini_run_arrays

    store = DocStore.create(tmp_path)
    rng = np.random.default_rng(3)
    names = [f"d{n}" for n in rng.permutation(500)]  # "d10" < "d9": string order differs from docno order
    store.add(Document(name, "", "text") for name in names)
    try:
        for trial in range(300):
            n = int(rng.integers(0, 120))
            docnos = rng.choice(500, n, replace=False).astype(np.int64)
            if trial % 3 == 0:
                found = rng.integers(1, 6, n).astype(np.float32)  # integer SPLADE scores: many ties
            elif trial % 3 == 1:
                found = (3.0 + rng.integers(0, 4, n) * 1e-4 + rng.integers(0, 3, n) * 1e-6).astype(np.float32)
            else:
                found = rng.random(n).astype(np.float32)
            for k in (1, 5, 10, 100):
                got = anserini_run_arrays(found, docnos, k, store)
                want = anserini_ranked(list(zip(found.tolist(), store.ids_by_docno(docnos.tolist()))), k)
                assert list(got) == want
                assert got.docnos.tolist() == [names.index(d.doc_id) for d in want]
    finally:
        store.close()
