"""The rerank stage with a real (tiny, randomly initialized) cross-encoder (the ``cross_encoder`` fixture builds it: no
weights ship on PyPI).

The order must be the cross-encoder's own scores over (query, title + text) of the fused top hits.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from retrieval.search.pipeline import SearchError
from retrieval.search.rerank import RerankConfig
from tests.support import make_dataset
from tests.support.cli import run_cli
from tests.support.server import Server

QUERY = "what similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft"


def test_rerank_orders_by_the_cross_encoder(searcher, cross_encoder: Path) -> None:  # type: ignore[no-untyped-def]
    from sentence_transformers import CrossEncoder

    fused = searcher.search(QUERY, k=20, depth=50)
    stored = searcher.store.get([h.id for h in fused.hits])
    expected = CrossEncoder(str(cross_encoder), device="cpu").predict([(QUERY, stored[h.id].contents) for h in fused.hits])
    by_model = sorted(zip(fused.hits, expected), key=lambda pair: (-float(pair[1]), pair[0].rank))
    result = searcher.search(QUERY, k=10, depth=50, explain=True, rerank=RerankConfig(str(cross_encoder), depth=20))
    assert [h.id for h in result.hits] == [h.id for h, _ in by_model[:10]]
    assert [h.score for h in result.hits] == pytest.approx([float(s) for _, s in by_model[:10]], abs=1e-5)
    fused_rank = {h.id: (h.rank, h.score) for h in fused.hits}
    for hit in result.hits:
        assert hit.before_rerank is not None and (hit.before_rerank.rank, hit.before_rerank.score) == fused_rank[hit.id]
    assert result.timings_ms["rerank"] > 0
    page = searcher.search(QUERY, k=5, offset=5, depth=50, rerank=RerankConfig(str(cross_encoder), depth=20))
    assert [h.id for h in page.hits] == [h.id for h in result.hits[5:10]]
    batch = searcher.batch_search([QUERY, "wing flutter"], k=10, depth=50, rerank=RerankConfig(str(cross_encoder), 20))
    assert [h.id for h in batch[0].hits] == [h.id for h in result.hits]
    with pytest.raises(SearchError, match="must cover offset \\+ k = 15"):
        searcher.search(QUERY, k=10, offset=5, rerank=RerankConfig(str(cross_encoder), depth=12))
    with pytest.raises(SearchError, match="does not exist"):
        searcher.search(QUERY, rerank=RerankConfig("/no/such/cross-encoder"))


def test_rerank_over_http_only_with_the_servers_models(server: Server, cross_encoder: Path) -> None:
    """The session's server offers the test cross-encoder (HYBRID_RERANK_MODELS) and no other."""
    url = f"{server.url}/v1/indexes/small/search"
    body = {"query": QUERY, "k": 5, "explain": True, "rerank": {"model": str(cross_encoder), "depth": 10}}
    response = httpx.post(url, json=body, timeout=120)
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert len(hits) == 5 and all("before_rerank" in h for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    for model, status, fragment in [("cross-encoder/ms-marco-MiniLM-L6-v2", 422, "not one this server offers"),
                                    (str(cross_encoder), 422, "must cover offset + k")]:
        bad = {**body, "rerank": {"model": model, "depth": 3}}
        answer = httpx.post(url, json=bad, timeout=60)
        assert answer.status_code == status and fragment in answer.json()["error"]["message"]


def test_the_harness_scores_every_method_reranked(tmp_path: Path, cross_encoder: Path) -> None:
    import json

    from sentence_transformers import CrossEncoder

    data = make_dataset(tmp_path)
    out = tmp_path / "out"
    cmd = ["eval", "beir", str(data), "--index-root", str(tmp_path / "idx"),
           "--out", str(out), "--retrievers", "bm25", "--rerank", str(cross_encoder), "--rerank-depth", "5",
           "--metrics", "ndcg@10", "--quiet"]
    proc = run_cli(*cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    methods = {m["method"]: m for m in json.loads((out / "tiny" / "summary.json").read_text())["methods"]}
    name = f"bm25 >> rerank({cross_encoder}, 5)"
    assert set(methods) == {"bm25", name} and methods[name]["base"] == "bm25"
    assert methods[name]["p_vs_base"] is not None
    runs: dict[str, list[str]] = {}
    for run_file, key in (("bm25.trec", "plain"), (next(p.name for p in (out / "tiny").glob("*rerank*.trec")), "re")):
        for line in (out / "tiny" / run_file).read_text().splitlines():
            qid, _, doc, *_ = line.split()
            if qid == "2":
                runs.setdefault(key, []).append(doc)
    corpus = {json.loads(line)["_id"]: json.loads(line) for line in (data / "corpus.jsonl").read_text().splitlines()}
    head = runs["plain"][:5]
    scores = CrossEncoder(str(cross_encoder), device="cpu").predict(
        [("boundary layer transition", f"{corpus[d]['title']} {corpus[d]['text']}".strip()) for d in head])
    expected = [d for _, _, d in sorted(zip((-float(s) for s in scores), range(5), head))]
    assert runs["re"][:5] == expected and runs["re"][5:] == runs["plain"][5:]
