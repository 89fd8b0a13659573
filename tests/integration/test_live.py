"""Live index management in the library: upserts and deletes in every retriever, crash recovery,
point-in-time views under concurrent writes, snapshots, FAISS tombstones and compaction."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from indexes.storage.docstore.corpus import Document
from indexes.storage.docstore.layout import IndexRoot
from tests.support import REPO, cranfield_docs, write_jsonl
from tests.support.live import copy_index, doc

QUERIES = ["boundary layer heat transfer", "supersonic flow over a wing", "similarity laws for aeroelastic models"]
RETRIEVERS = ("bm25", "splade", "dense")


def ranking(searcher, query: str, retriever: str, k: int = 40) -> list[tuple[str, float]]:  # type: ignore[no-untyped-def]
    return [(h.id, h.score) for h in searcher.search(query, k=k, retrievers=[retriever]).hits]


def assert_same(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> None:
    assert [i for i, _ in a] == [i for i, _ in b]
    assert [s for _, s in a] == pytest.approx([s for _, s in b], rel=1e-5, abs=1e-5)


def test_writes_equal_a_fresh_build_of_the_final_corpus(index_root: Path, tmp_path: Path) -> None:
    from indexes.indexing.builder import BuildOptions, build_index
    from indexes.indexing.live import LiveIndex
    from retrieval.search.pipeline import Searcher

    root, folder = copy_index(index_root, tmp_path)
    rows = cranfield_docs(75)
    live = LiveIndex.open(folder, root=root)
    new, gone = rows[60:75], [rows[3]["_id"], rows[17]["_id"]]
    changed = dict(rows[8], text="flutter of a swept wing measured in a transonic wind tunnel at high mach numbers")
    result = live.upsert([doc(r) for r in new] + [doc(changed)])
    assert (result.upserted, result.seq) == (16, 1)
    result = live.delete(gone + ["no-such-id"])
    assert (result.deleted, result.missing, result.seq) == (2, ["no-such-id"], 2)
    assert live.doc_count == 73

    final = [changed if r["_id"] == changed["_id"] else r for r in rows if r["_id"] not in gone]
    ref_root = IndexRoot(tmp_path / "ref")
    build_index(write_jsonl(tmp_path / "final.jsonl", final), "ref", ref_root, BuildOptions(progress=False, batch_size=16))
    reference = Searcher.open(ref_root.resolve("ref"))

    with live.view() as searcher:
        for query in QUERIES:
            # Impacts and vectors do not depend on the rest of the collection: equal at once.
            for retriever in ("splade", "dense"):
                assert_same(ranking(searcher, query, retriever), ranking(reference, query, retriever))
        hits = searcher.search("swept wing transonic wind tunnel flutter", k=5, include_text=True, explain=True).hits
        top = {h.id: h for h in hits}
        assert changed["_id"] in top and top[changed["_id"]].text == changed["text"]
        everything = searcher.search("flow", k=200, depth=200, explain=True).hits
        assert not {h.id for h in everything} & set(gone)
    # BM25 statistics count deleted documents until their segments are merged (as in Elasticsearch);
    # after compaction every retriever equals the fresh build, scores included.
    live.compact()
    with live.view() as searcher:
        for query in QUERIES:
            for retriever in RETRIEVERS:
                assert_same(ranking(searcher, query, retriever), ranking(reference, query, retriever))
    live.close()
    # Closed with a checkpoint: the files match the manifest, and a read-only open sees the same index.
    reopened = Searcher.open(folder, verify="full")
    for retriever in RETRIEVERS:
        assert_same(ranking(reopened, QUERIES[0], retriever), ranking(reference, QUERIES[0], retriever))
    assert reopened.manifest.doc_count == 73 and reopened.manifest.live_seq == 2  # compaction is no write


def test_snapshot_round_trip_and_isolation(index_root: Path, tmp_path: Path) -> None:
    from indexes.indexing.live import LiveIndex, snapshot_root
    from retrieval.core.settings import Settings
    from retrieval.search.pipeline import Searcher
    from service.registry import Registry

    root, folder = copy_index(index_root, tmp_path)
    rows = cranfield_docs(70)
    live = LiveIndex.open(folder, root=root)
    live.upsert([doc(r) for r in rows[60:65]])
    live.delete([rows[0]["_id"]])
    target = live.snapshot(snapshot_root(root.root))
    with live.view() as searcher:
        at_snapshot = {r: ranking(searcher, QUERIES[1], r) for r in RETRIEVERS}
    live.upsert([doc(r) for r in rows[65:70]])
    live.delete([rows[1]["_id"], rows[60]["_id"]])
    live.close()

    snap = Searcher.open(target, verify="full")
    assert snap.manifest.doc_count == 64
    for retriever in RETRIEVERS:
        assert_same(ranking(snap, QUERIES[1], retriever), at_snapshot[retriever])
    # What `hybrid serve --index-root <snapshot>` does: load every index under that root.
    registry = Registry(Settings(index_root=target.parent, verify="full"))
    registry.load_all()
    try:
        assert list(registry.indexes) == ["live"] and not registry.failed
        assert registry.indexes["live"].doc_count == 64
    finally:
        registry.close()


CRASH_SCRIPT = """
import os, sys, json
from pathlib import Path
from indexes.storage.docstore.corpus import Document
from indexes.storage.docstore.layout import IndexRoot
from indexes.indexing.live import LiveIndex
root, folder, mode = IndexRoot(Path(sys.argv[1])), Path(sys.argv[2]), sys.argv[3]
live = LiveIndex.open(folder, root=root)
docs = [Document(**d) for d in json.loads(sys.argv[4])]
live.upsert(docs)
live.delete([sys.argv[5]])
if mode == "before-apply":
    # Die after the next record reaches the log, before any component applies it.
    live._apply = lambda *a, **k: os._exit(9)
    live.upsert([Document("late", "", "a write that reached the log but was never applied")])
print("ACK", flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("mode", ["after-ack", "before-apply"])
def test_kill_9_loses_no_acknowledged_write(index_root: Path, tmp_path: Path, mode: str) -> None:
    from indexes.indexing.live import LiveIndex
    from indexes.storage.docstore.wal import WriteAheadLog

    root, folder = copy_index(index_root, tmp_path)
    rows = cranfield_docs(64)[60:64]
    payload = json.dumps([{"id": r["_id"], "title": r["title"], "text": r["text"]} for r in rows])
    deleted = cranfield_docs(1)[0]["_id"]
    proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(root.root), str(folder), mode, payload, deleted],
                            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    if mode == "after-ack":
        assert proc.stdout.readline().strip() == "ACK"
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=300)
    assert WriteAheadLog(folder).size() > 0  # nothing was checkpointed: recovery must replay the log
    with (folder / "wal.log").open("ab") as handle:
        handle.write(b"0badc0de\t{\"seq\": 99, \"torn")  # a record cut off mid-write is never acknowledged

    live = LiveIndex.open(folder, root=root)
    try:
        assert WriteAheadLog(folder).size() == 0 and live.doc_count == 60 + 4 - 1 + (mode == "before-apply")
        with live.view() as searcher:
            for row in rows:
                for retriever in RETRIEVERS:
                    ids = [h.id for h in searcher.search(row["title"] or row["text"], k=60, depth=60, retrievers=[retriever]).hits]
                    assert row["_id"] in ids, (retriever, row["_id"])
            everything = {h.id for h in searcher.search("flow", k=100, depth=100, retrievers=["dense"]).hits}
            assert deleted not in everything
            if mode == "before-apply":
                for retriever in ("bm25", "dense"):
                    hits = searcher.search("a write that reached the log but was never applied", k=1, retrievers=[retriever]).hits
                    assert hits[0].id == "late", retriever
    finally:
        live.close()


def test_concurrent_readers_see_whole_write_batches(index_root: Path, tmp_path: Path) -> None:
    from indexes.indexing.live import LiveIndex

    root, folder = copy_index(index_root, tmp_path)
    live = LiveIndex.open(folder, root=root)
    batches, per_batch = 8, 4
    stop = threading.Event()
    problems: list[str] = []
    seen_states: set[tuple[int, ...]] = set()

    def write() -> None:
        try:
            for b in range(batches):
                docs = [Document(f"b{b}-{j}", "qqmarker", f"qqmarker batch {b} document {j} about wing flutter")
                        for j in range(per_batch)]
                live.upsert(docs)
                if b >= 2:
                    live.delete([f"b{b - 2}-{j}" for j in range(per_batch)])
        finally:
            stop.set()

    def read() -> None:
        while not stop.is_set() or not seen_states:
            with live.view() as searcher:
                result = searcher.search("qqmarker", k=200, depth=200, explain=True, include_text=True)
            visible = {n: {h.id for h in result.hits if h.id.startswith("b") and (h.explain or {}).get(n)}
                       for n in ("bm25", "dense", "splade")}
            if visible["bm25"] != visible["dense"]:
                problems.append(f"bm25 {sorted(visible['bm25'])} != dense {sorted(visible['dense'])}")
            if not visible["splade"] <= visible["bm25"]:
                problems.append(f"splade sees {sorted(visible['splade'] - visible['bm25'])} that bm25 does not")
            counts: dict[int, int] = {}
            for doc_id in visible["bm25"]:
                counts[int(doc_id[1:].split("-")[0])] = counts.get(int(doc_id[1:].split("-")[0]), 0) + 1
            if any(c != per_batch for c in counts.values()):
                problems.append(f"partial batch visible: {counts}")
            if any(h.text is None for h in result.hits):
                problems.append("a hit without its text")
            seen_states.add(tuple(sorted(counts)))

    readers = [threading.Thread(target=read) for _ in range(3)]
    writer = threading.Thread(target=write)
    for t in readers + [writer]:
        t.start()
    for t in readers + [writer]:
        t.join(timeout=600)
    live.close()
    assert not problems, problems[:5]
    assert len(seen_states) >= 3  # readers really overlapped with the writes


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF8,Flat", "IVF8,PQ8", "PQ8"])
def test_faiss_tombstones_and_compaction(tmp_path: Path, factory: str) -> None:
    from indexes.storage.faiss import backend as faiss_backend

    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((400, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    faiss_backend.save(faiss_backend.build(vectors[:300], factory), tmp_path)
    index = faiss_backend.FaissIndex(tmp_path, nprobe=8)
    index.add(vectors[300:], np.arange(300, 400))
    with pytest.raises(ValueError, match="not above"):
        index.add(vectors[:1], np.array([5]))
    live = np.ones(400, dtype=bool)
    live[::3] = False  # a third deleted
    bitmap = np.packbits(live, bitorder="little")
    queries = vectors[::3][:20]  # each query is a deleted vector: its own docno must never come back
    scores, docnos = index.search(queries, 10, bound=400, bitmap=bitmap)
    assert (docnos >= 0).all() and live[docnos].all()
    # A view taken before the last append (bound 300) never sees the appended docnos.
    _, early = index.search(vectors[300:310], 10, bound=300, bitmap=np.packbits(live[:300], bitorder="little"))
    assert (early < 300).all() and (early >= 0).all()
    assert index.compact(np.flatnonzero(~live))
    assert index.ntotal == int(live.sum())
    _, after = index.search(queries, 10)
    if factory in ("Flat", "HNSW16"):
        np.testing.assert_array_equal(after, docnos)  # same neighbours once the tombstones are gone
    index.save(tmp_path)
    assert faiss_backend.FaissIndex(tmp_path).ntotal == int(live.sum())
