"""Pre-encoded imports: ``hybrid encode`` then ``hybrid index build --vectors`` gives the index a direct build gives.

Runs the real CLI (its entry point, in this process: real models, Lucene and FAISS), on the small corpus the
session's index was built from, with the same batch size, so the encoder sees the same batches.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support import write_jsonl
from tests.support.cli import run_cli

pytestmark = pytest.mark.slow  # the small corpus encoded with the real models, and builds from its vectors


@pytest.fixture(scope="module")
def vectors(small_vectors: Path) -> Path:
    """``hybrid encode`` of the small corpus, batch size 16 (the session's ``small_vectors``; conftest checks the
    command's output)."""
    return small_vectors


def test_encode_writes_the_documented_format(vectors: Path, small_corpus: Path) -> None:
    manifest = json.loads((vectors / "vectors.json").read_text())
    documents = sum(1 for line in small_corpus.read_text().splitlines() if line.strip())
    assert manifest["documents"] == documents and set(manifest["sets"]) == {"splade", "dense"}
    splade, dense = manifest["sets"]["splade"], manifest["sets"]["dense"]
    assert splade["model_id"] == "splade-tiny" and len(splade["weights_sha256"]) == 64
    assert splade["parameters"]["scale"] == 100.0 and splade["count"] == documents
    rows = [json.loads(line) for line in (vectors / "splade.jsonl").read_text().splitlines()]
    assert len(rows) == documents and all(set(r) == {"id", "vector"} for r in rows)
    assert all(isinstance(w, int) and w > 0 for r in rows for w in r["vector"].values())
    array = np.load(vectors / "dense.npy")
    assert array.shape == (documents, dense["parameters"]["dimension"]) and array.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(array, axis=1), 1.0, atol=1e-5)
    ids = [json.loads(line) for line in (vectors / "dense.ids.jsonl").read_text().splitlines()]
    assert ids == [r["id"] for r in rows]
    assert not (vectors / ".work").exists()


def test_build_from_vectors_equals_a_direct_build(vectors: Path, small_corpus: Path, small_index: Path,
                                                  searcher, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import faiss

    from indexes.storage.docstore.layout import IndexRoot
    from indexes.storage.docstore.manifest import Manifest
    from indexes.storage.faiss.backend import FILE
    from indexes.storage.lucene.backend import document_impacts
    from retrieval.search.pipeline import Searcher

    root = tmp_path / "indexes"
    done = run_cli("index", "build", str(small_corpus), "--name", "imported", "--vectors", str(vectors),
                "--index-root", str(root), "--quiet")
    assert done.returncode == 0, done.stderr
    folder = IndexRoot(root).resolve("imported")
    manifest, direct = Manifest.read(folder), Manifest.read(small_index)
    for name in ("splade", "dense"):
        ours, theirs = manifest.retrievers[name], direct.retrievers[name]
        assert (ours.model_id, ours.weights_sha256) == (theirs.model_id, theirs.weights_sha256)
        assert ours.encode_seconds == 0.0  # nothing was encoded
    assert {k: v for k, v in manifest.retrievers["splade"].parameters.items()} == direct.retrievers["splade"].parameters
    assert document_impacts(folder / "splade") == document_impacts(small_index / "splade")
    a, b = (faiss.read_index(str(f / "dense" / FILE)) for f in (folder, small_index))
    assert a.ntotal == b.ntotal
    np.testing.assert_allclose(faiss.downcast_index(a.index).reconstruct_n(0, a.ntotal),
                               faiss.downcast_index(b.index).reconstruct_n(0, b.ntotal), atol=1e-6)
    assert (faiss.vector_to_array(a.id_map) == faiss.vector_to_array(b.id_map)).all()
    imported = Searcher.open(folder)
    try:
        for query in ["boundary layer transition at supersonic speeds", "heat transfer to a flat plate"]:
            got, want = imported.search(query, k=10), searcher.search(query, k=10)
            assert [(h.id, round(h.score, 5)) for h in got.hits] == [(h.id, round(h.score, 5)) for h in want.hits]
    finally:
        imported.close()


def test_vectors_that_do_not_fit_are_refused_in_one_line(vectors: Path, small_corpus: Path, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in small_corpus.read_text().splitlines()]
    other = write_jsonl(tmp_path / "other.jsonl", rows[:-1] + [{"_id": "new-doc", "title": "t", "text": "wing flutter"}])
    root = str(tmp_path / "indexes")
    done = run_cli("index", "build", str(other), "--name", "x", "--vectors", str(vectors), "--index-root", root, "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "1 document(s) of the corpus have no vector (e.g. 'new-doc')" in done.stderr
    assert not (tmp_path / "indexes" / "x").exists()  # nothing half-built was published

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "splade.jsonl").write_text("")
    done = run_cli("index", "build", str(small_corpus), "--name", "y", "--vectors", str(unfinished), "--index-root", root)
    assert done.returncode == 2 and "has no vectors.json" in done.stderr and "Traceback" not in done.stderr

    done = run_cli("encode", str(small_corpus), "--out", str(vectors))
    assert done.returncode == 2 and "is not empty" in done.stderr

    done = run_cli("encode", str(small_corpus), "--out", str(tmp_path / "bm25only"), "--retrievers", "bm25", "--quiet")
    assert done.returncode == 2 and "BM25 indexes text" in done.stderr
    assert not (tmp_path / "bm25only").exists()


def test_vectors_from_other_weights_are_refused(vectors: Path, small_corpus: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "vectors"
    shutil.copytree(vectors, copy)
    manifest = json.loads((copy / "vectors.json").read_text())
    manifest["sets"]["dense"]["weights_sha256"] = "0" * 64
    (copy / "vectors.json").write_text(json.dumps(manifest))
    done = run_cli("index", "build", str(small_corpus), "--name", "z", "--vectors", str(copy),
                "--index-root", str(tmp_path / "indexes"), "--quiet")
    assert done.returncode == 2 and "other weights" in done.stderr and "Traceback" not in done.stderr


def test_scale_generator_and_a_10k_build(small_index: Path, small_corpus: Path, tmp_path: Path) -> None:
    """The scale benchmark's generator (seeded) and a 10,000-document build from its resampled vectors."""
    from eval.bench.scale import generate
    from indexes.storage.docstore.layout import IndexRoot
    from retrieval.search.pipeline import Searcher

    source = tmp_path / "source"
    source.mkdir()
    write_jsonl(source / "queries.jsonl", [{"_id": "1", "text": "boundary layer transition"}])
    first = generate(source, small_index, 10_000, tmp_path / "a", seed=3)
    assert first["documents"] == 10_000 and first["vectors"] == "resampled"
    generate(source, small_index, 10_000, tmp_path / "b", seed=3)
    for name in ("corpus.jsonl", "vectors/splade.jsonl", "vectors/dense.npy"):  # seeded: the same bytes
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    vectors = np.load(tmp_path / "a" / "vectors" / "dense.npy", mmap_mode="r")
    assert vectors.shape[0] == 10_000 and len({tuple(np.round(v[:8], 4)) for v in vectors[:500]}) == 500
    root = tmp_path / "indexes"
    done = run_cli("index", "build", str(tmp_path / "a"), "--name", "scale-10k", "--vectors",
                str(tmp_path / "a" / "vectors"), "--index-root", str(root), "--quiet")
    assert done.returncode == 0, done.stderr
    searcher = Searcher.open(IndexRoot(root).resolve("scale-10k"))
    try:
        assert searcher.manifest.doc_count == 10_000
        result = searcher.search("boundary layer transition at supersonic speeds", k=10)
        assert len(result.hits) == 10 and all(h.explain is None for h in result.hits)
    finally:
        searcher.close()


def test_an_index_without_splade_term_vectors(small_corpus: Path, small_index: Path, tmp_path: Path) -> None:
    """--no-splade-doc-vectors: same rankings, a smaller impact index, PRF refused by name, live writes work."""
    from indexes.indexing.live import LiveIndex
    from indexes.storage.docstore.corpus import Document
    from indexes.storage.docstore.layout import IndexRoot
    from indexes.storage.docstore.manifest import Manifest
    from retrieval.core.errors import HybridError
    from retrieval.core.types import PrfConfig

    root = tmp_path / "indexes"
    done = run_cli("index", "build", str(small_corpus), "--name", "lean", "--retrievers", "splade",
                "--no-splade-doc-vectors", "--batch-size", "16", "--index-root", str(root), "--quiet")
    assert done.returncode == 0, done.stderr
    folder = IndexRoot(root).resolve("lean")
    lean, full = Manifest.read(folder).retrievers["splade"], Manifest.read(small_index).retrievers["splade"]
    assert lean.parameters["doc_vectors"] is False and lean.size_bytes < full.size_bytes
    # term vectors hold terms and impacts, no positions (issue 33): smaller than they were, and gone when off
    assert not list((folder / "splade").glob("*.tvd")) and list((small_index / "splade").glob("*.tvd"))
    live = LiveIndex.open(folder)
    try:
        with live.view() as searcher:
            query = "boundary layer transition at supersonic speeds"
            assert searcher.search(query, k=10).hits
            with pytest.raises(HybridError, match="--no-splade-doc-vectors"):
                searcher.search(query, k=5, prf={"splade": PrfConfig("rocchio")})
        live.upsert([Document("fresh", "wing flutter", "flutter of a swept wing at transonic speeds", {})])
        with live.view() as searcher:
            assert "fresh" in [h.id for h in searcher.search("swept wing flutter transonic", k=5).hits]
    finally:
        live.close()


def test_vector_diff_against_the_index_that_encoded_the_same_corpus(vectors: Path, small_index: Path) -> None:
    """eval/bench/vector_diff.py: the exported vectors equal the index's own, and a changed row shows."""
    import numpy as np

    from eval.bench.vector_diff import compare

    report = compare(small_index, vectors)
    assert report["docs"] == 60 and report["cosine_min"] > 0.9999 and report["share_at_least_0.999"] == 1.0
    rows = np.load(vectors / "dense.npy", mmap_mode="r+")
    saved = np.array(rows[0])
    rows[0] = -rows[0]
    rows.flush()
    try:
        assert compare(small_index, vectors)["cosine_min"] < -0.99
    finally:
        rows[0] = saved
        rows.flush()
