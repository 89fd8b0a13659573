"""Reliability: odd corpus input, kill -9 at every build stage, corrupted index files."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from indexes.indexing.builder import BuildOptions, build_index
from indexes.storage.docstore.layout import IndexRoot
from indexes.storage.docstore.manifest import Manifest
from indexes.storage.docstore.store import DocStore
from indexes.storage.lucene.backend import lucene_doc_count
from retrieval.search.pipeline import Searcher
from tests.support import cranfield_docs, write_jsonl
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.server import Server

GOOD = [json.dumps(d) for d in cranfield_docs(6)]
BAD_LINES = {
    "invalid_utf8": b'{"_id": "u", "text": "caf\xe9"}',
    "not_an_object": b'["a", "list"]',
    "missing_id": b'{"text": "no id"}',
    "bad_field": b'{"_id": "n", "text": 42}',
    "duplicate_id": json.dumps(json.loads(GOOD[0])).encode(),
}
ODD_DOCS = [
    {"_id": "big", "title": "five megabytes", "text": "pressure distribution on a cone " * 165_000},
    {"_id": "longtoken", "title": "", "text": "x" * 10_000 + " boundary layer " + "y" * 10_000},
    {"_id": "mixed", "title": "Ünïcode", "text": "шлем 風洞 テスト 😀🚀 aerodynamic heating مرحبا"},
    {"_id": "ctrl", "title": "control", "text": "tab\there\u0000nul \u0007 bell flow"},
    {"_id": "empty", "title": "", "text": ""},
]


def odd_corpus(path: Path, truncated_tail: bool) -> Path:
    lines = [g.encode() for g in GOOD] + list(BAD_LINES.values()) + [json.dumps(d).encode() for d in ODD_DOCS]
    body = b"\n".join(lines) + b"\n"
    if truncated_tail:
        body += b'{"_id": "cut", "text": "the file ends mid'
    path.write_bytes(body)
    return path


def id_sets(folder: Path) -> dict[str, set[str]]:
    from pyserini.index.lucene import LuceneIndexReader

    store = DocStore.open(folder)
    ids = {d.id for batch in store.iter_batches(1000) for d in batch}
    out = {"docstore": ids}
    for name in ("bm25", "splade"):
        reader = LuceneIndexReader(str(folder / name))
        assert lucene_doc_count(folder / name) == len(ids)
        out[name] = {reader.convert_internal_docid_to_collection_docid(i) for i in range(len(ids))}
    searcher = Searcher.open(folder, retrievers=["dense"])
    out["dense"] = {h.id for h in searcher.search("aerodynamic", k=1000, retrievers=["dense"]).hits}
    return out


@pytest.mark.slow  # a full build with the real models
def test_skip_mode_counts_bad_lines_and_keeps_retrievers_consistent(tmp_path: Path) -> None:
    corpus = odd_corpus(tmp_path / "odd.jsonl", truncated_tail=True)
    root = IndexRoot(tmp_path / "root")
    manifest = build_index(corpus, "odd", root, BuildOptions(progress=False, on_error="skip", batch_size=4))
    counts = {reason: info["count"] for reason, info in manifest.skipped.items()}
    assert counts == {**{r: 1 for r in BAD_LINES}, "malformed_json": 1, "empty": 1}
    folder = root.resolve("odd")
    sets = id_sets(folder)
    expected = {json.loads(g)["_id"] for g in GOOD} | {"big", "longtoken", "mixed", "ctrl"}
    assert all(s == expected for s in sets.values()), sets
    searcher = Searcher.open(folder)
    for query in ("风洞 😀", "x" * 10_000, "tab\there\u0000"):
        assert searcher.search(query, k=3).hits is not None


@pytest.mark.parametrize(("reason", "line"), list(BAD_LINES.items()))
def test_fail_mode_names_the_line(tmp_path: Path, reason: str, line: bytes) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(b"\n".join([GOOD[0].encode(), GOOD[1].encode(), line]) + b"\n")
    proc = run_cli("index", "build", str(corpus), "--name", "x", "--retrievers", "bm25", root=tmp_path / "r")
    assert_one_line_error(proc, "c.jsonl:3:")


def test_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(("\n".join(GOOD) + "\n").encode())
    corpus = tmp_path / "c.jsonl.gz"
    corpus.write_bytes(data[: len(data) // 2])
    assert_one_line_error(run_cli("index", "build", str(corpus), "--name", "x", "--retrievers", "bm25", root=tmp_path / "r"),
                          "cannot read compressed file")
    proc = run_cli("index", "build", str(corpus), "--name", "x", "--retrievers", "bm25", "--on-error", "skip", "--quiet",
                  root=tmp_path / "r")
    assert proc.returncode in (0, 2), proc.stderr  # skip keeps what was readable, or says the corpus is empty
    assert "Traceback" not in proc.stderr


KILL_SCRIPT = """
import os, signal, sys, threading
from pathlib import Path
from indexes.indexing.builder import BuildOptions, build_index
from indexes.storage.docstore.layout import IndexRoot
from retrieval.core.jvm import ensure_pyserini
ensure_pyserini()  # the JVM is up before the build, so a timed kill lands inside Lucene's indexing
target = sys.argv[3]
def on_stage(stage):
    if stage == target:
        if target == "bm25-start":  # kill while Lucene is indexing, not before it starts
            threading.Timer(0.1, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
        else:
            os.kill(os.getpid(), signal.SIGKILL)
build_index(Path(sys.argv[1]), "live", IndexRoot(Path(sys.argv[2])),
            BuildOptions(retrievers=("bm25", "dense"), progress=False, on_stage=on_stage))
"""


@pytest.mark.slow  # a kill -9 suite: a build in a process of its own, killed at each stage
@pytest.mark.parametrize("stage", ["docstore", "bm25-start", "dense-encode", "dense-faiss-written", "manifest", "renamed"])
def test_kill_at_each_stage_leaves_old_index(tmp_path: Path, stage: str) -> None:
    root = tmp_path / "root"
    old = write_jsonl(tmp_path / "old.jsonl", cranfield_docs(10))
    build_index(old, "live", IndexRoot(root), BuildOptions(retrievers=("bm25",), progress=False))
    before = Manifest.read(IndexRoot(root).resolve("live"))
    new = write_jsonl(tmp_path / "new.jsonl", cranfield_docs(120))
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(new), str(root), stage], capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    live = IndexRoot(root)
    assert live.names() == ["live"]
    after = Manifest.read(live.resolve("live"))
    assert after.created == before.created and after.doc_count == 10
    Searcher.open(live.resolve("live"), verify="full").search("boundary layer", k=3)
    # A later build is not tripped by the leftovers, and removes them.
    build_index(old, "live", live, BuildOptions(retrievers=("bm25",), progress=False))
    assert [p.name.split("@")[0] for p in (root / ".versions").iterdir()] == ["live"]


def test_server_refuses_corrupted_index_and_serves_the_others(index_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for name in ("good", "bad"):
        shutil.copytree(IndexRoot(index_root).resolve("small"), root / name)
    with (root / "bad" / "dense" / "index.faiss").open("r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00\x01\x02\x03")
    server = Server(root)
    try:
        ready = httpx.get(f"{server.url}/v1/ready").json()
        assert ready["indexes"] == ["good"] and "dense/index.faiss changed" in ready["failed"]["bad"]
        assert "/tmp" not in ready["failed"]["bad"]
        r = httpx.post(f"{server.url}/v1/indexes/bad/search", json={"query": "x"})
        assert r.status_code == 503 and "failed to load" in r.json()["error"]["message"]
        r = httpx.post(f"{server.url}/v1/indexes/good/search", json={"query": "boundary layer"}, timeout=60)
        assert r.status_code == 200 and r.json()["hits"]
    finally:
        server.stop()
