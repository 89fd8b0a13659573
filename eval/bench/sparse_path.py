"""Where a sparse search's time goes: Anserini's wrapper against Lucene reached directly, stage by stage.

For SPLADE (impacts) and BM25, on one index, queries encoded beforehand, in one process, interleaved
query by query over several rounds:

* ``anserini``: the previous path, Anserini's ``SimpleImpactSearcher`` (a ``HashMap`` filled one
  ``put`` per token) or ``SimpleSearcher``, whose results carry each hit's stored document;
* ``direct``: the current path (``indexes/storage/lucene/direct.py``), end to end;
* its stages: ``build`` (the query through Anserini's generator, one JNI call from a JSON string),
  ``lucene`` (``IndexSearcher.search`` alone, the query built beforehand), ``lucene+hits`` (search and
  the hits back as one JSON string), and the rest in Python (tie order, score rounding, ids).

Every query's hits and scores from both paths are compared; the report says how many differ (0 is the
requirement).

    python -m eval.bench.sparse_path --index data/indexes/cranfield --queries eval/datasets/cranfield \\
        --depth 100 --out reports/qdrant/sparse_path.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eval.bench.http_latency import percentiles
from indexes.storage.docstore.manifest import Manifest
from indexes.storage.lucene.backend import Bm25Index, ImpactIndex
from retrieval.core.jvm import JNI_LOCK
from retrieval.core.types import ScoredDoc


class AnseriniImpact:
    """The previous SPLADE path: Anserini's impact searcher, query map filled token by token."""

    def __init__(self, folder: Path) -> None:
        from jnius import autoclass

        self._searcher = autoclass("io.anserini.search.SimpleImpactSearcher")(str(folder))
        self._map, self._int = autoclass("java.util.HashMap"), autoclass("java.lang.Integer")

    def search(self, vector: dict[str, int], k: int) -> list[ScoredDoc]:
        with JNI_LOCK:
            jmap = self._map()
            for token, weight in vector.items():
                jmap.put(token, self._int(int(weight)))
            return [ScoredDoc(h.docid, float(h.score)) for h in self._searcher.search(jmap, k)]


class AnseriniBm25:
    """The previous BM25 path: Pyserini's ``LuceneSearcher``."""

    def __init__(self, folder: Path, k1: float, b: float) -> None:
        from pyserini.search.lucene import LuceneSearcher

        self._searcher = LuceneSearcher(str(folder))
        self._searcher.set_bm25(k1, b)

    def search(self, query: str, k: int) -> list[ScoredDoc]:
        with JNI_LOCK:
            return [ScoredDoc(h.docid, float(h.score)) for h in self._searcher.search(query, k)]


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000.0


def measure(direct: Any, anserini: Any, inputs: Sequence[Any], depth: int, rounds: int) -> dict[str, Any]:
    """Stage timings of one retriever; ``direct`` is a Bm25Index or ImpactIndex."""
    mismatches = sum(
        [(h.doc_id, h.score) for h in direct.search(x, depth)] != [(h.doc_id, h.score) for h in anserini.search(x, depth)]
        for x in inputs
    )
    searcher, builder = direct._searcher, direct._queries
    built = [builder.build(x) for x in inputs]
    stages: dict[str, list[float]] = {s: [] for s in ("anserini", "direct", "build", "lucene", "lucene+hits")}

    def lucene(query: Any) -> None:
        with JNI_LOCK:
            searcher._searcher.search(query, depth + 16)

    for _ in range(3):  # warm-up: the JVM compiles Lucene's search loop after some hundred searches
        for x, q in zip(inputs, built):
            direct.search(x, depth), anserini.search(x, depth), lucene(q)
    for _ in range(rounds):
        for x, q in zip(inputs, built):
            stages["anserini"].append(_timed(lambda: anserini.search(x, depth)))
            stages["direct"].append(_timed(lambda: direct.search(x, depth)))
            stages["build"].append(_timed(lambda: builder.build(x)))
            stages["lucene"].append(_timed(lambda: lucene(q)))
            stages["lucene+hits"].append(_timed(lambda: searcher._fetch(q, depth + 16)))
    report: dict[str, Any] = {s: percentiles(v) for s, v in stages.items()}
    p50 = {s: r["p50"] for s, r in report.items()}
    report["python_p50_ms"] = p50["direct"] - p50["build"] - p50["lucene+hits"]
    report["hits_back_p50_ms"] = p50["lucene+hits"] - p50["lucene"]
    report["anserini_over_direct_p50"] = p50["anserini"] / p50["direct"]
    report["direct_over_lucene_p50"] = p50["direct"] / p50["lucene"]
    report["queries_differing"] = mismatches
    return report


def main(argv: Sequence[str] | None = None) -> None:
    from eval.beir_data import load_dataset
    from retrieval.search.pipeline import Searcher

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True, help="A BEIR dataset folder (its queries are used).")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("reports/qdrant/sparse_path.json"))
    args = parser.parse_args(argv)
    queries = list(load_dataset(args.queries).queries.values())[: args.limit]
    folder = args.index.resolve()
    manifest = Manifest.read(folder)
    encoder_side = Searcher.open(folder, retrievers=["splade"], verify="off")
    vectors = encoder_side.searchers["splade"].encode_queries(queries)  # type: ignore[attr-defined]
    encoder_side.close()
    params = manifest.retrievers["bm25"].parameters
    report: dict[str, Any] = {"index": str(args.index), "queries": len(queries), "depth": args.depth, "rounds": args.rounds}
    report["splade"] = measure(ImpactIndex(folder / "splade"), AnseriniImpact(folder / "splade"), vectors, args.depth,
                               args.rounds)
    report["bm25"] = measure(Bm25Index(folder / "bm25", params["k1"], params["b"]),
                             AnseriniBm25(folder / "bm25", params["k1"], params["b"]), queries, args.depth, args.rounds)
    report["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    for name in ("splade", "bm25"):
        r = report[name]
        print(f"{name}: anserini p50 {r['anserini']['p50']:.3f} ms, direct {r['direct']['p50']:.3f} ms "
              f"({r['anserini_over_direct_p50']:.2f}x faster); stages p50: build {r['build']['p50']:.3f}, "
              f"lucene {r['lucene']['p50']:.3f}, hits back {r['hits_back_p50_ms']:.3f}, python {r['python_p50_ms']:.3f}; "
              f"direct / lucene alone {r['direct_over_lucene_p50']:.2f}x; queries differing: {r['queries_differing']}")
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
