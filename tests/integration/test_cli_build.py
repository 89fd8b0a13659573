"""The ``hybrid`` CLI: bad input gets one line and exit 2; builds are atomic; search prints hits.

Commands run in this process (:func:`run_cli`: the console script's entry point, its output and exit status); the
build killed with -9 runs in a process of its own."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from retrieval.search.pipeline import Searcher
from tests.support import cranfield_docs, write_jsonl
from tests.support.cli import HYBRID, assert_one_line_error, run_cli


@pytest.fixture()
def bad_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"_id": "1", "text": "a"}\n{"_id": "2", "text": "b"\n', ":2: malformed JSON"),
        ('{"_id": "1", "text": "a"}\n{"title": "x", "text": "no id"}\n', ":2: missing or empty '_id'"),
        ('{"_id": "1", "text": "a"}\n{"_id": "1", "text": "b"}\n', ":2: duplicate _id '1'"),
        ("", "corpus is empty"),
        ('["not", "an", "object"]\n', ":1: each line must be a JSON object"),
        ('{"_id": "1", "text": 5}\n', "field 'text' must be a string"),
    ],
)
def test_bad_corpus(bad_dir: Path, content: str, fragment: str) -> None:
    corpus = bad_dir / "corpus.jsonl"
    corpus.write_text(content)
    proc = run_cli("index", "build", str(corpus), "--name", "bad", "--retrievers", "bm25", root=bad_dir / "root")
    assert_one_line_error(proc, fragment)
    assert not (bad_dir / "root" / "bad").exists()
    assert list((bad_dir / "root" / ".versions").iterdir()) == []


def test_bad_options(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", cranfield_docs(3))
    root = tmp_path / "root"
    assert_one_line_error(run_cli("index", "build", str(tmp_path / "missing.jsonl"), "--name", "x", root=root),
                          "no such file")
    assert_one_line_error(run_cli("index", "build", str(corpus), "--name", "x", "--retrievers", "bm25,colbert", root=root),
                          "unknown retriever 'colbert'")
    assert_one_line_error(run_cli("index", "build", str(corpus), "--name", "x", "--retrievers", "dense",
                                 "--dense-model", str(tmp_path / "no-model"), root=root), "does not exist")
    assert_one_line_error(run_cli("index", "build", str(corpus), "--name", "../escape", root=root), "invalid index name")
    assert_one_line_error(run_cli("index", "build", str(tmp_path), "--name", "x", root=root), "no corpus.jsonl")
    assert_one_line_error(run_cli("index", "info", "nothing", root=root), "no index named 'nothing'")
    assert_one_line_error(run_cli("search", "nothing", "q", root=root), "no index named 'nothing'")


def test_gzip_beir_folder_build_search_list_delete(tmp_path: Path) -> None:
    folder = tmp_path / "beir"
    folder.mkdir()
    rows = cranfield_docs(30) + [{"_id": "empty", "title": "", "text": ""}]
    with gzip.open(folder / "corpus.jsonl.gz", "wt") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows)
    root = tmp_path / "root"
    proc = run_cli("index", "build", str(folder), "--name", "gz", "--retrievers", "bm25", "--quiet", root=root)
    assert proc.returncode == 0, proc.stderr
    assert "30 documents" in proc.stdout and "skipped 1 document(s), empty" in proc.stderr
    proc = run_cli("search", "gz", "boundary layer", "--json", "--k", "3", root=root)
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)["hits"]
    assert len(hits) == 3 and hits[0]["rank"] == 1 and hits[0]["score"] >= hits[1]["score"]
    listed = json.loads(run_cli("index", "list", "--json", root=root).stdout)
    assert [r["name"] for r in listed] == ["gz"] and listed[0]["documents"] == 30
    info = json.loads(run_cli("index", "info", "gz", root=root).stdout)
    assert info["skipped"] == {"empty": {"count": 1, "examples": ["empty"]}} and info["retrievers"]["bm25"]["parameters"]["k1"] == 0.9
    assert run_cli("index", "delete", "gz", root=root).returncode == 0
    assert json.loads(run_cli("index", "list", "--json", root=root).stdout) == []


@pytest.mark.slow  # a kill -9 suite: a 400-document build in a process of its own
def test_killed_build_leaves_previous_index_serving(tmp_path: Path) -> None:
    from indexes.storage.docstore.layout import IndexRoot
    from retrieval.search.pipeline import Searcher

    root = tmp_path / "root"
    small = write_jsonl(tmp_path / "small.jsonl", cranfield_docs(20))
    assert run_cli("index", "build", str(small), "--name", "live", "--retrievers", "bm25", "--quiet", root=root).returncode == 0
    before = Searcher.open(IndexRoot(root).resolve("live")).search("boundary layer", k=5)

    bigger = write_jsonl(tmp_path / "bigger.jsonl", cranfield_docs(400))
    # Batches of 4: the first chunk of staged impacts (8 batches) lands after 32 documents, not 256.
    proc = subprocess.Popen([*HYBRID, "index", "build", str(bigger), "--name", "live", "--retrievers", "bm25,splade",
                             "--batch-size", "4", "--index-root", str(root), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # Wait until the build is encoding SPLADE (the impact writer's scratch folder appears as it starts), then kill -9.
    while time.time() < deadline and not list((root / ".versions").glob("*.building/.work/splade")):
        assert proc.poll() is None, "build ended before it could be killed"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    live = IndexRoot(root)
    assert live.names() == ["live"]
    reopened = Searcher.open(live.resolve("live"))
    assert reopened.manifest.doc_count == 20 and list(reopened.manifest.retrievers) == ["bm25"]
    assert [h.id for h in reopened.search("boundary layer", k=5).hits] == [h.id for h in before.hits]
    assert len(list((root / ".versions").glob("*.building"))) == 1  # the killed build's leftovers

    # The next build of the same name cleans the leftovers and publishes atomically.
    assert run_cli("index", "build", str(small), "--name", "live", "--retrievers", "bm25", "--quiet", root=root).returncode == 0
    assert list((root / ".versions").glob("*.building")) == []
    assert len(list((root / ".versions").iterdir())) == 1


def test_failed_rebuild_keeps_old_index(tmp_path: Path) -> None:
    from indexes.storage.docstore.layout import IndexRoot

    root = tmp_path / "root"
    good = write_jsonl(tmp_path / "good.jsonl", cranfield_docs(10))
    assert run_cli("index", "build", str(good), "--name", "keep", "--retrievers", "bm25", "--quiet", root=root).returncode == 0
    target = IndexRoot(root).resolve("keep")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + "{broken\n")
    assert_one_line_error(run_cli("index", "build", str(bad), "--name", "keep", "--retrievers", "bm25", root=root),
                          ":11: malformed JSON")
    assert IndexRoot(root).resolve("keep") == target and (target / "manifest.json").is_file()


def test_bm25_builds_beside_the_encoders_with_the_same_index(tmp_path: Path, small_corpus: Path,
                                                              searcher: Searcher) -> None:
    """``overlap_builds="on"`` (what ``auto`` does on CUDA): BM25, which encodes nothing, builds on its own thread
    while SPLADE and dense encode, and the index searches exactly as the one built a retriever at a time."""
    import threading

    from indexes.indexing.builder import BuildOptions, build_index
    from indexes.storage.docstore.layout import IndexRoot

    seen: list[tuple[str, str]] = []
    options = BuildOptions(progress=False, batch_size=16, overlap_builds="on",
                           on_stage=lambda stage: seen.append((stage, threading.current_thread().name)))
    manifest = build_index(small_corpus, "beside", IndexRoot(tmp_path), options)
    threads = {stage.split("-")[0]: name for stage, name in seen if stage.endswith(("-start", "-encode"))}
    assert threads["bm25"].startswith("lucene-beside") and threads["splade"] == threads["dense"] == "MainThread"
    assert 0 < manifest.build_wall_seconds and list(manifest.retrievers) == ["bm25", "splade", "dense"]
    beside = Searcher.open(IndexRoot(tmp_path).resolve("beside"))
    try:
        for retriever in ("bm25", "splade", "dense"):
            for query in ("boundary layer", "supersonic flow over wings"):
                got = [(h.id, h.score) for h in beside.search(query, k=20, retrievers=[retriever]).hits]
                assert got == [(h.id, h.score) for h in searcher.search(query, k=20, retrievers=[retriever]).hits]
    finally:
        beside.close()
