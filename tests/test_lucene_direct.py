"""Lucene searched past Anserini's wrapper gives the wrapper's exact hits and scores, also on a live
reader with several segments and deletes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indexes.storage.lucene_direct import tie_adjusted
from tests.conftest import cranfield_docs

QUERIES = ["similarity laws aeroelastic models heated high speed aircraft", "boundary layer transition",
           "slipstream wing lift", "heat conduction composite slabs", "flow flow flow"]


def test_tie_adjusted_by_hand() -> None:
    f = lambda x: float(np.float32(x))  # noqa: E731
    assert tie_adjusted([7.0, 5.0, 5.0, 5.0, 3.0]) == [7.0, 5.0, f(5.0 - 1e-6), f(5.0 - 2e-6), 3.0]
    # float32 4.16315 is 4.16314983...: double arithmetic rounds it down (float32 arithmetic would give 4.1632)
    assert tie_adjusted([4.16315, 1.0]) == [f(4.1631), 1.0]
    assert tie_adjusted([]) == []


def _anserini(kind: str, folder: Path, reader: Any, k1: float = 0.9, b: float = 0.4) -> Any:
    from jnius import autoclass

    from indexes.storage.anserini import point_at_reader

    cls = "io.anserini.search.SimpleImpactSearcher" if kind == "impact" else "io.anserini.search.SimpleSearcher"
    searcher = autoclass(cls)(str(folder))
    if kind == "bm25":
        searcher.set_bm25(k1, b)
    point_at_reader(searcher, reader)
    return searcher


def _java_map(vector: dict[str, int]) -> Any:
    from jnius import autoclass

    jmap = autoclass("java.util.HashMap")()
    for token, weight in vector.items():
        jmap.put(token, autoclass("java.lang.Integer")(int(weight)))
    return jmap


@pytest.mark.parametrize("kind", ["impact", "bm25"])
def test_direct_equals_anserini_with_segments_and_deletes(kind: str, small_index: Path, searcher: Any,
                                                          tmp_path: Path) -> None:
    from indexes.storage.lucene_backend import Bm25Index, ImpactIndex
    from indexes.storage.lucene_direct import SegmentIds
    from indexes.storage.lucene_writer import LuceneWriter

    name = "splade" if kind == "impact" else "bm25"
    folder = tmp_path / name
    shutil.copytree(small_index / name, folder)
    (folder / "write.lock").unlink(missing_ok=True)
    writer = LuceneWriter(folder, kind)  # type: ignore[arg-type]
    rows = cranfield_docs(70)
    splade = searcher.searchers["splade"]
    if kind == "impact":
        vectors = splade.encoder.encode_documents([r["title"] + " " + r["text"] for r in rows[60:70]], splade.quantization)
        writer.upsert([(r["_id"], v, {}) for r, v in zip(rows[60:70], vectors)])
        writer.upsert([(rows[2]["_id"], vectors[0], {})])  # a replaced document: deleted in one segment, added in another
    else:
        writer.upsert([(r["_id"], r["title"] + " " + r["text"], {}) for r in rows[60:70]])
        writer.upsert([(rows[2]["_id"], rows[61]["text"], {})])
    writer.delete([rows[5]["_id"], rows[64]["_id"]])
    ids = SegmentIds()
    try:
        reader = writer.open_reader()
        assert reader.leaves().size() > 1
        ours = ImpactIndex(folder, reader=reader, ids=ids) if kind == "impact" else Bm25Index(folder, reader=reader, ids=ids)
        theirs = _anserini(kind, folder, writer.open_reader())
        for query in QUERIES:
            for k in (1, 10, 100):
                if kind == "impact":
                    vector = splade.encode_queries([query])[0]
                    got, want = ours.search(vector, k), theirs.search(_java_map(vector), k)
                else:
                    got, want = ours.search(query, k), theirs.search(query, k)
                assert [(h.doc_id, h.score) for h in got] == [(h.docid, float(h.score)) for h in want], (query, k)
                assert rows[5]["_id"] not in {h.doc_id for h in got}
        # A second reader after more writes reuses the tables of the segments it shares with the first.
        writer.upsert([(rows[1]["_id"], vectors[1] if kind == "impact" else rows[62]["text"], {})])
        again = ImpactIndex(folder, reader=writer.open_reader(), ids=ids) if kind == "impact" else \
            Bm25Index(folder, reader=writer.open_reader(), ids=ids)
        assert len(ids._by_segment) >= 2
        again.close()
        ours.close()
        theirs.close()
    finally:
        writer.close()


def test_tie_adjusted_equals_the_float32_array_version() -> None:
    """The plain-Python fast path gives what the numpy float32 version gives, near-ties and long runs included."""
    from indexes.storage.lucene_direct import _tie_adjusted_exact

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
    from indexes.storage.corpus import Document
    from indexes.storage.docstore import DocStore
    from indexes.storage.lucene_direct import anserini_ranked, anserini_run_arrays

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
