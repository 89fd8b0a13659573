"""Shared fixtures: one small real index (real models, real Lucene, real FAISS) per test session."""

from __future__ import annotations

import gzip
import itertools
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
CRANFIELD = REPO / "eval" / "datasets" / "cranfield"
SMALL_DOCS = 60


def cranfield_docs(limit: int) -> list[dict]:
    with gzip.open(CRANFIELD / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        docs = (json.loads(line) for line in handle)
        return list(itertools.islice((d for d in docs if d["text"].strip()), limit))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", cranfield_docs(SMALL_DOCS))


@pytest.fixture(scope="session")
def index_root(tmp_path_factory: pytest.TempPathFactory, small_corpus: Path) -> Path:
    from indexes.indexing.builder import BuildOptions, build_index
    from indexes.storage.layout import IndexRoot

    root = tmp_path_factory.mktemp("indexes")
    build_index(small_corpus, "small", IndexRoot(root), BuildOptions(progress=False, batch_size=16))
    return root


@pytest.fixture(scope="session")
def small_index(index_root: Path) -> Path:
    from indexes.storage.layout import IndexRoot

    return IndexRoot(index_root).resolve("small")


@pytest.fixture(scope="session")
def searcher(small_index: Path):  # type: ignore[no-untyped-def]
    from retrieval.search.pipeline import Searcher

    s = Searcher.open(small_index)
    yield s
    s.close()
