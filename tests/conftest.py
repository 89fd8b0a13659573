"""Shared fixtures: one small real index (real models, real Lucene, real FAISS) per test session, built once, and the
two servers over it that several modules share.

Tests live in two rooms: ``tests/unit`` (pure logic: no JVM, no model) and ``tests/integration`` (real components on
small data). ``slow`` marks every test that needs a full index built with the real models (SPLADE-tiny and MiniLM
encoding a corpus), Ray, or a long end-to-end flow; ``make test-fast`` runs the rest (``-m "not slow"``). A test that
asks for the session index or the session's encoded corpus, directly or through another fixture, is marked ``slow``
here, so the fast lane never builds them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.support.cli import run_cli  # noqa: E402
from tests.support.data import SMALL_DOCS, cranfield_docs, write_jsonl  # noqa: E402
from tests.support.judged import Judged, run_harness  # noqa: E402
from tests.support.server import Server  # noqa: E402

# Every fixture over the session index depends on index_root; small_vectors is the small corpus encoded.
ENCODED_CORPUS = ("index_root", "small_vectors")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in ENCODED_CORPUS):
            item.add_marker(pytest.mark.slow)
    # The JVM handles SIGSEGV itself (it is how compiled Java code checks for nulls), and a Ray driver in this
    # process takes over the handling of fatal signals: Lucene work here after Ray has started can kill the process
    # (seen: a 10,000-document impact build in tests/integration/test_vectors.py). Tests that start Ray here run last.
    items.sort(key=lambda item: item.get_closest_marker("ray_driver") is not None)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", cranfield_docs(SMALL_DOCS))


@pytest.fixture(scope="session")
def index_root(tmp_path_factory: pytest.TempPathFactory, small_corpus: Path) -> Path:
    from indexes.indexing.builder import BuildOptions, build_index
    from indexes.storage.docstore.layout import IndexRoot

    root = tmp_path_factory.mktemp("indexes")
    build_index(small_corpus, "small", IndexRoot(root), BuildOptions(progress=False, batch_size=16))
    return root


@pytest.fixture(scope="session")
def small_index(index_root: Path) -> Path:
    from indexes.storage.docstore.layout import IndexRoot

    return IndexRoot(index_root).resolve("small")


@pytest.fixture(scope="session")
def searcher(small_index: Path):  # type: ignore[no-untyped-def]
    from retrieval.search.pipeline import Searcher

    s = Searcher.open(small_index)
    yield s
    s.close()


@pytest.fixture(scope="session")
def small_vectors(tmp_path_factory: pytest.TempPathFactory, small_corpus: Path) -> Path:
    """``hybrid encode`` of the small corpus with the session index's batch size, so the same batches and the same
    vectors: builds of these 60 documents with metadata or in shards import them instead of encoding them again
    (tests/integration/test_vectors.py checks that an import gives the index a direct build gives)."""
    out = tmp_path_factory.mktemp("vectors") / "cranfield-vectors"
    done = run_cli("encode", str(small_corpus), "--out", str(out), "--batch-size", "16", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "index them with: hybrid index build" in done.stdout
    return out


@pytest.fixture(scope="session")
def cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real cross-encoder (tiny, randomly initialized) built here: no weights ship on PyPI."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from retrieval.encoders.models import resolve_model

    folder = tmp_path_factory.mktemp("cross-encoder")
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("splade-tiny").path))
    torch.manual_seed(7)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def server(index_root: Path, cross_encoder: Path) -> Iterator[Server]:
    """The server over the session index, read-only, no keys; it offers the test cross-encoder for reranking. Its
    admission limits admit the 50 concurrent searches and the soak its tests send (the defaults, one running and one
    queued search per two cores, would answer most of them 429: tests/integration/test_overload.py tests that)."""
    s = Server(index_root, env={"HYBRID_RERANK_MODELS": str(cross_encoder), "HYBRID_MAX_CONCURRENT": "64",
                                "HYBRID_MAX_QUEUED": "64"})
    yield s
    s.stop()


KEYED_ENV = {"HYBRID_API_KEYS": "k1-secret,k2-secret,search-key", "HYBRID_ADMIN_KEYS": "admin-key",
             "HYBRID_CORS_ORIGINS": "https://app.example"}


@pytest.fixture(scope="session")
def keyed_server(index_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """A server with search keys, an admin key and one CORS origin over three copies of the session index, one per
    user: ``small`` (searched only), ``copy`` (reloaded) and ``news`` (written to)."""
    from indexes.storage.docstore.layout import IndexRoot

    root = tmp_path_factory.mktemp("keyed-root")
    for name in ("small", "copy", "news"):
        shutil.copytree(IndexRoot(index_root).resolve("small"), root / name)
    s = Server(root, env=KEYED_ENV)
    yield s, root
    s.stop()


@pytest.fixture(scope="session")
def judged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Judged]:
    """The harness's index of the tiny judged dataset (BM25 only: no model) served with keys and the harness's
    leaderboard; for the workbench's browser tests and the client's tests (tests/support/judged.py)."""
    found = run_harness(tmp_path_factory.mktemp("judged"))
    yield found
    found.server.stop()
