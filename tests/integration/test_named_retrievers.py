"""Named retrievers: a second dense retriever (another model, another dimension) beside the defaults,
built, searched, fused, written to live, served over HTTP and evaluated by the harness."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support import cranfield_docs, make_dataset, write_jsonl
from tests.support.cli import run_cli
from tests.support.server import Server

QUERY = "heat transfer in laminar boundary layers"


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second sentence-transformers model built here: MiniLM plus a seeded 384->64 projection, so its
    vectors (and their dimension) differ from the default dense retriever's."""
    import torch
    from sentence_transformers import SentenceTransformer, models

    from retrieval.encoders.models import resolve_model

    base = SentenceTransformer(str(resolve_model("all-MiniLM-L6-v2").path), device="cpu")
    torch.manual_seed(0)
    projection = models.Dense(in_features=384, out_features=64, activation_function=torch.nn.Identity())
    folder = tmp_path_factory.mktemp("models") / "minilm-64"
    SentenceTransformer(modules=[*base, projection, models.Normalize()], device="cpu").save(str(folder))
    return folder


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, small_model: Path) -> Path:
    root = tmp_path_factory.mktemp("named")
    corpus = write_jsonl(root.parent / "named.jsonl", cranfield_docs(40))
    proc = run_cli("index", "build", str(corpus), "--name", "named", "--retrievers", "bm25,dense",
                  "--retriever", f"dense-small=dense:{small_model}", "--index-root", str(root), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dense-small" in proc.stdout
    return root


@pytest.mark.slow
def test_manifest_lists_named_retrievers(root: Path, small_model: Path) -> None:
    from indexes.storage.docstore.layout import IndexRoot
    from indexes.storage.docstore.manifest import Manifest

    manifest = Manifest.read(IndexRoot(root).resolve("named"))
    assert list(manifest.retrievers) == ["bm25", "dense", "dense-small"]
    small = manifest.retrievers["dense-small"]
    assert small.kind == "dense" and small.parameters["dimension"] == 64 and small.model_id == str(small_model.resolve())
    assert manifest.retrievers["dense"].parameters["dimension"] == 384


@pytest.mark.slow
def test_search_and_fuse_by_name(root: Path, small_model: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from indexes.storage.docstore.layout import IndexRoot
    from retrieval.search.fusion import FusionConfig
    from retrieval.search.pipeline import Searcher

    searcher = Searcher.open(IndexRoot(root).resolve("named"))
    try:
        result = searcher.search(QUERY, k=5, retrievers=["dense-small"], include_text=True)
        model = SentenceTransformer(str(small_model), device="cpu")
        q = model.encode_query([QUERY], convert_to_numpy=True, normalize_embeddings=True)[0]
        top = result.hits[0]
        d = model.encode_document([f"{top.title} {top.text}".strip()], convert_to_numpy=True, normalize_embeddings=True)[0]
        assert top.score == pytest.approx(float(np.dot(q, d)), abs=1e-4)  # its own model's cosine
        default = searcher.search(QUERY, k=5, retrievers=["dense"])
        assert [h.score for h in default.hits] != [h.score for h in result.hits]  # another model, other scores
        fused = searcher.search(QUERY, k=5, retrievers=["bm25", "dense", "dense-small"], explain=True,
                                fusion=FusionConfig(method="weighted", weights={"dense-small": 2.0}))
        assert fused.retrievers == ["bm25", "dense", "dense-small"]
        assert all(set(h.explain or {}) == {"bm25", "dense", "dense-small"} for h in fused.hits)
    finally:
        searcher.close()


@pytest.mark.slow
def test_live_writes_reach_the_named_retriever(root: Path, tmp_path: Path) -> None:
    import shutil

    from indexes.indexing.live import LiveIndex
    from indexes.storage.docstore.corpus import Document
    from indexes.storage.docstore.layout import IndexRoot

    copy = IndexRoot(tmp_path / "copy")
    copy.root.mkdir()
    shutil.copytree(IndexRoot(root).resolve("named"), copy.root / "named")
    live = LiveIndex.open(copy.resolve("named"), root=copy)
    try:
        doc = Document("new-1", "Hypersonic ramjet inlet", "Shock trains in hypersonic ramjet inlets at Mach 6.")
        live.upsert([doc])
        with live.view() as view:
            hits = view.search("hypersonic ramjet inlet shock train", k=1, retrievers=["dense-small"]).hits
            assert hits[0].id == "new-1"
        live.delete(["new-1"])
        with live.view() as view:
            assert "new-1" not in [h.id for h in view.search("hypersonic ramjet inlet", k=5, retrievers=["dense-small"]).hits]
    finally:
        live.close()
    reopened = LiveIndex.open(copy.resolve("named"), root=copy, verify="full")  # the checkpoint wrote both FAISS files
    reopened.close()


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[Server]:
    s = Server(root)
    yield s
    s.stop()


@pytest.mark.slow
def test_http_takes_retriever_names_from_the_index(server: Server) -> None:
    info = httpx.get(f"{server.url}/v1/indexes/named").json()
    assert [(r["name"], r["kind"]) for r in info["retrievers"]] == [("bm25", "bm25"), ("dense", "dense"),
                                                                     ("dense-small", "dense")]
    body = {"query": QUERY, "k": 3, "retrievers": ["bm25", "dense-small"], "explain": True,
            "fusion": {"method": "rrf", "weights": {"dense-small": 2}}}
    response = httpx.post(f"{server.url}/v1/indexes/named/search", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["retrievers"] == ["bm25", "dense-small"]
    assert set(response.json()["hits"][0]["explain"]) == {"bm25", "dense-small"}
    bad = httpx.post(f"{server.url}/v1/indexes/named/search", json={"query": QUERY, "retrievers": ["splade"]})
    assert bad.status_code == 422 and "choose from bm25, dense, dense-small" in bad.json()["error"]["message"]


@pytest.mark.slow
def test_harness_evaluates_named_retrievers(tmp_path: Path, small_model: Path) -> None:
    data = make_dataset(tmp_path)
    out = tmp_path / "out"
    cmd = ["eval", "beir", str(data), "--index-root", str(tmp_path / "idx"), "--out", str(out), "--retrievers",
           "bm25,dense", "--retriever", f"dense-small=dense:{small_model}", "--hybrid", "rrf:dense+dense-small",
           "--metrics", "ndcg@10", "--quiet"]
    proc = run_cli(*cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    methods = {m["method"]: m for m in json.loads((out / "tiny" / "summary.json").read_text())["methods"]}
    assert set(methods) == {"bm25", "dense", "dense-small", "rrf:dense+dense-small"}
    assert methods["dense-small"]["scores"]["ndcg@10"] != methods["dense"]["scores"]["ndcg@10"]
    assert methods["rrf:dense+dense-small"]["p_vs_bm25"] is not None
    again = run_cli(*cmd)
    assert again.returncode == 0 and "reusing index beir-tiny" in again.stderr


@pytest.mark.parametrize("args, message", [
    (["index", "build", "CORPUS", "--name", "x", "--retriever", "x=colbert"], "unknown retriever kind 'colbert'"),
    (["index", "build", "CORPUS", "--name", "x", "--retriever", "bm25=dense:all-MiniLM-L6-v2", "--retrievers", "bm25"],
     "retriever name 'bm25' is given twice"),
    (["index", "build", "CORPUS", "--name", "x", "--retriever", "b=bm25:all-MiniLM-L6-v2"], "takes no model"),
    (["eval", "beir", "DATA", "--hybrid", "rrf:bm25+colbert"], "unknown retriever 'colbert'"),
])
def test_bad_retriever_specs_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", cranfield_docs(3))
    data = make_dataset(tmp_path)
    args = [str(corpus) if a == "CORPUS" else str(data) if a == "DATA" else a for a in args]
    proc = run_cli(*args, "--index-root", str(tmp_path / "idx"))
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1
