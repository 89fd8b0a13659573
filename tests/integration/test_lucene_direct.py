"""Lucene searched past Anserini's wrapper gives the wrapper's exact hits and scores, also on a live
reader with several segments and deletes. The tie rounding and order redone outside Lucene, on their own, are
tests/unit/test_anserini_order.py."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support import cranfield_docs

QUERIES = ["similarity laws aeroelastic models heated high speed aircraft", "boundary layer transition",
           "slipstream wing lift", "heat conduction composite slabs", "flow flow flow"]


def _anserini(kind: str, folder: Path, reader: Any, k1: float = 0.9, b: float = 0.4) -> Any:
    from jnius import autoclass

    from indexes.storage.lucene.anserini import point_at_reader

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
    from indexes.storage.lucene.backend import Bm25Index, ImpactIndex
    from indexes.storage.lucene.direct import SegmentIds
    from indexes.storage.lucene.writer import LuceneWriter

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


