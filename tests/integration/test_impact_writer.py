"""The impact writer (``indexes/storage/lucene/impacts.py`` and its Java classes) against Anserini's path, the one it
replaced: the same index term by term (ids, order, norms, postings, term vectors), the same hits and scores, the
same matrix, live upserts that write what a build writes, and terms Lucene would split refused in one line.

The sample is synthetic but made of SPLADE-tiny's own word pieces (``"``, ``\\``, ``|``, ``##`` pieces and
non-ASCII ones included), written the ways vectors files come: plain and ``\\u`` escaped JSON, keys in either order,
float and non-positive impacts, so both of the writer's readers (its scanner and Jackson) are exercised.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import write_jsonl
from tests.support.cli import assert_one_line_error, run_cli

DOCS = 900


@dataclass
class Sample:
    corpus: Path
    vectors: Path  # a folder as 'hybrid encode' writes it
    ids: list[str]
    impacts: list[dict[str, int]]  # what each document's vector means (positive integer impacts)
    queries: list[dict[str, int]]


def _vocabulary() -> list[str]:
    from retrieval.encoders.models import resolve_model

    spec = json.loads((resolve_model("splade-tiny").path / "tokenizer.json").read_text(encoding="utf-8"))
    return [t for t in spec["model"]["vocab"] if not t.startswith("[")]


def write_sample(folder: Path, docs: int, seed: int = 3) -> Sample:
    from indexes.storage.vectors.files import VectorSet, VectorsManifest
    from retrieval.encoders.models import resolve_model

    rng = random.Random(seed)
    vocab = _vocabulary()
    tricky = ['"', "\\", "|", "##s", "##ing", ":", "~"] + [t for t in vocab if not t.isascii()][:40]
    folder.mkdir(parents=True)
    ids, impacts, lines = [], [], []
    for n in range(docs):
        doc_id = f"d{n:05d}" if n % 7 else f"dé-{n}"  # some ids not ASCII
        terms = rng.sample(vocab, rng.randint(20, 220)) + rng.sample(tricky, rng.randint(0, 4))
        vector: dict[str, Any] = {t: rng.randint(1, 300) for t in dict.fromkeys(terms)}
        meaning = dict(vector)
        if n % 11 == 0:  # a float is truncated, as Python's int() and Anserini's asInt() truncate it
            first = next(iter(vector))
            vector[first] = meaning[first] + 0.75
        if n % 13 == 0:  # a term of impact 0 or less is no posting
            vector["zero"], vector["negative"] = 0, -4
        line = {"vector": vector, "id": doc_id} if n % 5 == 0 else {"id": doc_id, "vector": vector}
        lines.append(json.dumps(line, ensure_ascii=n % 3 == 0, separators=(",", ":") if n % 4 == 0 else None))
        ids.append(doc_id)
        impacts.append(meaning)
    (folder / "vectors").mkdir()
    (folder / "vectors" / "splade.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    model = resolve_model("splade-tiny")
    manifest = VectorsManifest(corpus_sha256="", documents=docs)
    manifest.sets["splade"] = VectorSet("splade", "splade", model.model_id, model.weights_sha256,
                                        {"scale": 100.0, "doc_top_k": None}, docs, ["splade.jsonl"])
    manifest.write(folder / "vectors")
    corpus = write_jsonl(folder / "corpus.jsonl", [{"_id": i, "title": "", "text": f"document {i}"} for i in ids])
    queries = [{t: rng.randint(1, 200) for t in rng.sample(vocab[:3000], 6) + rng.sample(tricky, 2)} for _ in range(12)]
    return Sample(corpus, folder / "vectors", ids, impacts, queries)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    return write_sample(tmp_path_factory.mktemp("impacts") / "sample", DOCS)


def _java(name: str) -> Any:
    from retrieval.core.jvm import ensure_pyserini

    ensure_pyserini()  # before jnius is imported: importing it starts the JVM
    from jnius import autoclass

    return autoclass(name)


def digest(folder: Path) -> dict[str, Any]:
    from retrieval.core.jvm import JNI_LOCK

    java = _java("hybrid.lucene.IndexDigest")
    with JNI_LOCK:
        return json.loads(java.digest(str(folder), "contents", 0))


def build_new(sample: Sample, folder: Path, doc_vectors: bool, ids: list[str] | None = None, chunk: int = 150,
              threads: int = 2) -> dict[str, Any]:
    from indexes.storage.lucene.backend import build_impact
    from indexes.storage.lucene.impacts import Chunk
    from indexes.storage.vectors.files import SparseVectors

    ids = ids if ids is not None else sample.ids
    source = SparseVectors(sample.vectors / "splade.jsonl", ids, partial=True)
    chunks = (Chunk(count, file=source.path, ranges=ranges) for count, ranges in source.line_ranges(ids, chunk))
    return build_impact(chunks, folder.with_name(folder.name + "-work"), folder, threads, len(ids), doc_vectors,
                        matrix=folder / "matrix")


def build_anserini(sample: Sample, folder: Path, doc_vectors: bool, rows: list[tuple[str, dict[str, int]]]) -> None:
    from indexes.storage.lucene.backend import build_impact_anserini

    build_impact_anserini(rows, folder.with_name(folder.name + "-work"), folder, 1, len(rows), doc_vectors)


def searches(folder: Path, queries: list[dict[str, int]], reader: Any = None) -> list[list[tuple[str, float]]]:
    from indexes.storage.lucene.backend import ImpactIndex

    index = ImpactIndex(folder, reader=reader)
    try:
        return [[(h.doc_id, h.score) for h in index.search(q, 50)] for q in queries]
    finally:
        index.close()


def test_the_scanner_reads_as_jackson_reads() -> None:
    """The writer's fast reader takes the lines our writers write and hands anything else to Jackson, whose reading
    (or refusal) is the reference: both must read every line alike."""
    compare = _java("hybrid.lucene.ImpactDocuments").compareReaders
    taken = [b'{"id": "a", "vector": {"x": 1, "y": 2}}', b'{"vector":{"x":1},"id":"b"}', b'{"id": "g", "vector": {}}',
             b'  {"id" : "j" , "vector" : { "\xc3\xa9t\xc3\xa9" : 5 , "|" : 7} }\r']
    handed = [b'{"id":"c","vector":{"\\"": 3, "\\\\": 4}}', b'{"id": "d", "vector": {"x": 1.7, "y": 0, "z": -3}}',
              b'{"id": "e", "vector": {"x": 1, "x": 2}}', b'{"id": "f", "vector": {"a b": 1}}',
              b'{"id": "h", "vector": {"x": 01}}', b'{"id": "i", "vector": {"x": 1}, "contents": "zz"}',
              b'{"id": "k", "vector": {"x": 99999999999}}', b'{"id": "l", "vector": {"x": 1}',
              b'{"id": "m", "vector": {"x": 1}} x', b'{"id": "n", "vector": {"\xff": 1}}',
              b'{"id": "o", "vector": {"\xe2\x80\x83": 1}}', b'{"id": "p", "vector": {"x": 1e2}}',
              b'{"id": "q", "id": "r", "vector": {"x": 1}}', b'{"id": "s", "vector": {"' + b"w" * 256 + b'": 1}}',
              b'{"id": "t\xc3\xa9", "vector": {"x": 1}}', b'{"id": 5, "vector": {"x": 1}}', b'{"vector": {"x": 1}}',
              b'[1, 2]', b'{"id": "u", "vector": {"x": true}}', b'{"id": "v", "vector": {"": 1}}']
    for line in taken:
        assert compare(line) == "scanned 1 of 1", line
    for line in handed:
        assert compare(line) == "scanned 0 of 1", line


@pytest.mark.parametrize("doc_vectors", [False, True], ids=["lean", "doc-vectors"])
def test_the_same_index_as_anserini_term_by_term(sample: Sample, tmp_path: Path, doc_vectors: bool) -> None:
    from indexes.storage.vectors.files import SparseVectors

    old, new = tmp_path / "anserini", tmp_path / "writer"
    source = SparseVectors(sample.vectors / "splade.jsonl", sample.ids)
    build_anserini(sample, old, doc_vectors, list(source.vectors(sample.ids)))
    stages = build_new(sample, new, doc_vectors)
    want, got = digest(old), digest(new)
    assert got["documents"] == want["documents"] == DOCS
    assert got["postings"] == want["postings"] == sum(len(v) for v in sample.impacts)
    for section in ("schema", "stats", "ids", "norms", "terms", "postings_sha256", "vectors"):
        assert got[section] == want[section], section
    # Anserini's term vectors also held the positions of its repeated pseudo-tokens; Lucene refuses positions with
    # given frequencies, and nothing reads them.
    assert want["vector_positions"] is doc_vectors and got["vector_positions"] is False
    assert stages["chunks"] == got["segments"] == 6 and stages["postings"] == got["postings"]  # one segment a chunk
    assert searches(new, sample.queries) == searches(old, sample.queries)
    # the reference also says what each document holds: the positive impacts, floats truncated
    from indexes.storage.lucene.backend import document_impacts

    assert document_impacts(new) == dict(zip(sample.ids, sample.impacts))


def test_store_order_with_threads_and_the_file_in_another_order(sample: Sample, tmp_path: Path) -> None:
    """Lucene's order is the order asked for (the store's), whatever the file's order and however many threads;
    lines far apart in the file are read range by range."""
    order = sample.ids[::-1][:400] + sample.ids[:100]
    build_new(sample, tmp_path / "four", False, ids=order, chunk=37, threads=4)
    from indexes.storage.lucene.direct import SegmentIds, open_reader
    from retrieval.core.jvm import JNI_LOCK

    reader = open_reader(tmp_path / "four")
    try:
        assert SegmentIds().table(reader) == order
    finally:
        with JNI_LOCK:
            reader.close()


def test_chunks_of_a_vectors_file(sample: Sample) -> None:
    """A chunk ends at its document count or where its lines pass the byte cap (one document at least), and holds
    exactly its documents' lines, in the order asked for."""
    from indexes.storage.vectors.files import SparseVectors

    source = SparseVectors(sample.vectors / "splade.jsonl", sample.ids)
    order = sample.ids[100:300] + sample.ids[:100]
    chunks = list(source.line_ranges(order, 64, max_bytes=40_000))
    assert sum(count for count, _ in chunks) == len(order) and max(count for count, _ in chunks) <= 64
    data = (sample.vectors / "splade.jsonl").read_bytes()
    got = [json.loads(line)["id"] for _, ranges in chunks for a, b in ranges for line in data[a:b].splitlines()]
    assert got == order
    assert all(count == 1 or sum(b - a for a, b in ranges) <= 40_000 for count, ranges in chunks)
    assert [len(r) for _, r in source.line_ranges(sample.ids, 1000)] == [1]  # the file's order: one range


def test_the_matrix_holds_the_postings(sample: Sample, tmp_path: Path) -> None:
    """The parts Java writes load as the parts Python's MatrixWriter writes, and score alike."""
    from indexes.storage.sparse.impact_matrix import ImpactMatrix, MatrixWriter

    build_new(sample, tmp_path / "writer", False)
    reference = tmp_path / "python" / "matrix"
    writer = MatrixWriter(reference)
    for vector in sample.impacts:
        writer.add(vector)
    writer.close()
    ours, theirs = ImpactMatrix(tmp_path / "writer" / "matrix"), ImpactMatrix(reference)
    assert sorted(p.name for p in (tmp_path / "writer" / "matrix").glob("part-*.npz")) == [
        f"part-{n:05d}.npz" for n in range(6)]
    for query in sample.queries:
        assert ours.search(query, 100) == theirs.search(query, 100)
    with np.load(tmp_path / "writer" / "matrix" / "part-00001.npz") as part:
        assert part["docnos"].tolist() == list(range(150, 300)) and part["weights"].dtype == np.uint16
        assert int(part["seq"][0]) == 0 and part["indptr"][-1] == len(part["terms"])


def test_live_upserts_write_what_a_build_writes(sample: Sample, tmp_path: Path) -> None:
    """Upserts through the writer, into an index Anserini built (indexes from before the writer) and into one it
    built: new documents, replaced ones, one left with no positive impact (deleted), then the same hits, scores,
    postings and term vectors as a build of the final documents."""
    from indexes.storage.lucene.backend import ImpactIndex, document_impacts
    from indexes.storage.lucene.writer import LuceneWriter

    base = list(zip(sample.ids[:500], sample.impacts[:500]))
    rng = random.Random(5)
    added = list(zip(sample.ids[500:600], sample.impacts[500:600]))
    replaced = [(doc_id, dict(rng.sample(sorted(v.items()), len(v) // 2))) for doc_id, v in base[:40]]
    emptied = [(base[45][0], {"x": 0})]
    final = dict(base)
    final.update(dict(added))
    final.update(dict(replaced))
    final.pop(base[45][0])
    reference = tmp_path / "reference"
    build_anserini(sample, reference, True, list(final.items()))
    for built in ("anserini", "writer"):
        folder = tmp_path / built
        if built == "anserini":
            build_anserini(sample, folder, True, base)
        else:
            build_new(sample, folder, True, ids=sample.ids[:500])
        writer = LuceneWriter(folder, "impact", doc_vectors=True)
        try:
            writer.upsert([(i, v, {}) for i, v in added + replaced + emptied])
            reader = writer.open_reader()
            assert searches(folder, sample.queries, reader) == searches(reference, sample.queries), built
            writer.commit(1)
        finally:
            writer.close()
        assert document_impacts(folder) == document_impacts(reference) == final
        for index in (ImpactIndex(folder), ImpactIndex(reference)):
            try:
                vectors = index.doc_vectors([i for i, _ in replaced[:5] + added[:5]])
            finally:
                index.close()
            assert vectors == [final[i] for i, _ in replaced[:5] + added[:5]]


def test_terms_lucene_would_split_are_refused(sample: Sample, tmp_path: Path) -> None:
    from indexes.storage.lucene.impacts import ImpactInputError, check_terms
    from indexes.storage.lucene.writer import LuceneWriter

    bad = write_sample(tmp_path / "bad", 30)
    lines = (bad.vectors / "splade.jsonl").read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[17])
    row["vector"]["two words"] = 3
    lines[17] = json.dumps(row)
    (bad.vectors / "splade.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    root = tmp_path / "indexes"
    done = run_cli("index", "build", str(bad.corpus), "--name", "bad", "--vectors", str(bad.vectors), "--retrievers",
                   "splade", "--index-root", str(root), "--quiet")
    assert_one_line_error(done, "splade.jsonl: document 17 (id 'd00017'): term 'two words' contains whitespace")
    assert not (root / "bad").exists()

    with pytest.raises(ImpactInputError, match="cannot be a Lucene impact term"):
        check_terms(["wing", "no\u00a0break"], "model 'x'")
    check_terms(_vocabulary(), "splade-tiny")  # the model's own vocabulary passes

    folder = tmp_path / "live"
    build_new(sample, folder, False, ids=sample.ids[:50])
    writer = LuceneWriter(folder, "impact", doc_vectors=False)
    try:
        with pytest.raises(ImpactInputError, match="contains whitespace"):
            writer.upsert([("fresh", {"wing": 3}, {}), ("worse", {"x\ty": 2}, {})])
        writer.commit(1)
    finally:
        writer.close()
    from indexes.storage.lucene.backend import document_impacts

    assert "fresh" not in document_impacts(folder)  # a batch with a refused document writes nothing


def test_a_build_with_metadata_filters_as_before(sample: Sample, tmp_path: Path) -> None:
    """Metadata fields ride with the documents (keyword, number, has): a filtered search keeps exactly the documents
    the filter selects, ranked as the unfiltered search ranks them."""
    from indexes.storage.docstore.layout import IndexRoot
    from retrieval.search.pipeline import Searcher

    rows = [{"_id": i, "title": "", "text": f"document {i}", "metadata": {"bucket": n % 4, "tag": f"t{n % 3}"}}
            for n, i in enumerate(sample.ids)]
    corpus = write_jsonl(tmp_path / "meta.jsonl", rows)
    done = run_cli("index", "build", str(corpus), "--name", "meta", "--vectors", str(sample.vectors), "--retrievers",
                   "splade", "--index-root", str(tmp_path / "root"), "--quiet", "--threads", "2")
    assert done.returncode == 0, done.stderr
    searcher = Searcher.open(IndexRoot(tmp_path / "root").resolve("meta"), splade_search="lucene")
    try:
        bucket = {r["_id"]: r["metadata"]["bucket"] for r in rows}
        tag = {r["_id"]: r["metadata"]["tag"] for r in rows}
        for query in sample.queries[:4]:
            plain = searcher.search("", k=DOCS, vectors={"splade": [query]}, retrievers=["splade"])
            filtered = searcher.search("", k=DOCS, vectors={"splade": [query]}, retrievers=["splade"],
                                       filter={"and": [{"range": {"bucket": {"gte": 1, "lte": 2}}},
                                                       {"terms": {"tag": ["t0", "t2"]}}]})
            want = [(h.id, h.score) for h in plain.hits if 1 <= bucket[h.id] <= 2 and tag[h.id] in ("t0", "t2")]
            assert [(h.id, h.score) for h in filtered.hits] == want and want
    finally:
        searcher.close()


@pytest.mark.slow  # Cranfield encoded by SPLADE-tiny (1,398 documents) and 225 queries, twice searched
def test_cranfield_splade_ndcg_is_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The index the writer builds scores Cranfield as the former path's did: nDCG@10 .3549 (README), searched in
    memory and through Lucene."""
    from tests.support import CRANFIELD

    scores = {}
    for search in ("matrix", "lucene"):
        monkeypatch.setenv("HYBRID_SPLADE_SEARCH", search)
        out = tmp_path / search
        done = run_cli("eval", "beir", str(CRANFIELD), "--retrievers", "splade", "--metrics", "ndcg@10", "--out",
                       str(out), "--index-root", str(tmp_path / "indexes"), "--quiet")
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads((out / "cranfield" / "summary.json").read_text())
        scores[search] = next(m["scores"]["ndcg@10"] for m in summary["methods"] if m["method"] == "splade")
    assert round(scores["matrix"], 4) == round(scores["lucene"], 4) == 0.3549, scores
