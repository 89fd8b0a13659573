"""What a metadata filter costs: latency per retriever at 100%, 10% and 1% selectivity, and hits returned.

    python -m eval.bench.filters --source ../shared/data/cranfield --index data/indexes/beir-cranfield \\
        --docs 100000 --work data/filters --out reports/bench/filters [--faiss HNSW32] [--queries 200]

A corpus of ``--docs`` documents with pre-encoded vectors comes from :mod:`eval.bench.scale` (seeded); each
document gets metadata ``{"bucket": B, "group": "gG"}`` with ``B`` a seeded permutation of ``docno % 100``
and ``G = B // 10``, so ``bucket`` ranges select exact shares of the corpus. The index is built from the
vectors twice, with the metadata and without it (the Lucene indexes of a corpus with metadata are written
by :class:`~indexes.storage.lucene.writer.LuceneWriter`, the others by ``IndexCollection``), to give the
build cost of filterable fields. Then, in the library, single queries (``k`` 10, depth 100) per retriever
and for the RRF hybrid, with no filter and with:

* 100%: ``{"range": {"bucket": {"gte": 0}}}``
* 50%: ``{"range": {"bucket": {"lt": 50}}}``
* 10%: ``{"range": {"bucket": {"lt": 10}}}`` and ``{"term": {"group": "g0"}}`` (keyword)
* 1%: ``{"term": {"bucket": 0}}``

Per case: p50/p95 of the retriever's search time (encoding excluded: it does not depend on the filter) and
of the whole query, and the mean number of hits (k whenever k documents match). For dense, also recall@10
against the exact filtered top 10 (brute force over the matching vectors). Writes ``filters.json`` and
``filters.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from eval.bench.http_latency import percentiles
from eval.bench.scale import generate
from indexes.indexing.builder import build_index
from indexes.storage.docstore.corpus import read_jsonl_objects
from indexes.storage.docstore.layout import IndexRoot
from retrieval.core.options import BuildOptions, OpenOptions
from retrieval.search.pipeline import Searcher

CASES: dict[str, dict[str, Any] | None] = {
    "none": None,
    "100%": {"range": {"bucket": {"gte": 0}}},
    "50%": {"range": {"bucket": {"lt": 50}}},
    "10% range": {"range": {"bucket": {"lt": 10}}},
    "10% keyword": {"term": {"group": "g0"}},
    "1%": {"term": {"bucket": 0}},
}


def add_metadata(corpus: Path, out: Path, seed: int) -> None:
    """Copy ``corpus`` with bucket/group metadata (seeded: the same bytes every run)."""
    rows = [obj for _, obj in read_jsonl_objects(corpus)]
    rng = np.random.default_rng(seed)
    buckets = rng.permutation(np.arange(len(rows)) % 100)
    with out.open("w", encoding="utf-8") as handle:
        for row, bucket in zip(rows, buckets):
            row["metadata"] = {"bucket": int(bucket), "group": f"g{int(bucket) // 10}"}
            handle.write(json.dumps(row) + "\n")


def build(corpus: Path, vectors: Path, name: str, root: IndexRoot, factory: str, reuse: bool) -> dict[str, Any]:
    if reuse and (root.path(name) / "manifest.json").exists():
        from indexes.storage.docstore.manifest import Manifest

        manifest = Manifest.read(root.resolve(name))
        return {"wall_s": "reused", "stages_s": {n: round(r.index_seconds, 2) for n, r in manifest.retrievers.items()},
                "fields": manifest.fields}
    started = time.perf_counter()
    manifest = build_index(corpus, name, root, BuildOptions(progress=False, faiss_factory=factory,
                                                            splade_doc_vectors=False), vectors=vectors)
    return {"wall_s": round(time.perf_counter() - started, 2),
            "stages_s": {n: round(r.index_seconds, 2) for n, r in manifest.retrievers.items()},
            "fields": manifest.fields}


def dense_recall(searcher: Searcher, queries: list[str], where: dict[str, Any], allowed: np.ndarray) -> float:
    """recall@10 of the filtered dense search against brute force over the matching documents' vectors."""
    dense = searcher.searchers["dense"]
    index = dense.index  # type: ignore[attr-defined]
    docnos = np.flatnonzero(allowed)
    stored = index.reconstruct(docnos)
    vectors = dense.encode_queries(queries)  # type: ignore[attr-defined]
    ids = searcher.store.ids_by_docno(docnos.tolist())
    hits = 0
    for q, vector in zip(queries, vectors):
        exact = {ids[i] for i in np.argsort(-(stored @ vector))[:10]}
        got = {h.id for h in searcher.search(q, k=10, retrievers=["dense"], filter=where).hits}
        hits += len(exact & got)
    return hits / (10 * len(queries))


def measure(searcher: Searcher, queries: list[str]) -> dict[str, Any]:
    report: dict[str, Any] = {}
    methods = {"bm25": ["bm25"], "splade": ["splade"], "dense": ["dense"], "hybrid": None}
    for case, where in CASES.items():
        for method, retrievers in methods.items():
            for q in queries[:5]:
                searcher.search(q, k=10, retrievers=retrievers, filter=where)
            search_ms, total_ms, hits = [], [], []
            for q in queries:
                result = searcher.search(q, k=10, retrievers=retrievers, filter=where)
                total_ms.append(result.took_ms)
                search_ms.append(sum(v for k, v in result.timings_ms.items() if k.endswith("_search")))
                hits.append(len(result.hits))
            report.setdefault(case, {})[method] = {"search_ms": percentiles(search_ms), "total_ms": percentiles(total_ms),
                                                   "mean_hits": float(np.mean(hits))}
            print(f"{case:>12} {method:>7}: search p50 {np.median(search_ms):7.2f} ms, total p50 "
                  f"{np.median(total_ms):7.2f} ms, hits {np.mean(hits):.2f}", flush=True)
        if where is not None:
            mask = searcher.store.filter_mask(searcher.checked_filter(where))  # type: ignore[arg-type]
            report[case]["matches"] = int(mask.sum())
            report[case]["dense_recall@10_vs_exact"] = dense_recall(searcher, queries[:50], where, mask)
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Command: `{report['command']}`", "",
             f"# Filter cost: {report['docs']:,} documents, FAISS {report['faiss']}, {report['queries']} queries, "
             f"2 cores ({report['machine']['platform']})", "",
             f"Build from vectors: with metadata {report['build']['with_metadata']['wall_s']} s "
             f"(stages {report['build']['with_metadata']['stages_s']}), without "
             f"{report['build']['without_metadata']['wall_s']} s (stages {report['build']['without_metadata']['stages_s']}).",
             "", "Search time per query (ms, p50 / p95; encoding excluded), and mean hits at k=10:", "",
             "| filter | matches | bm25 | splade | dense | hybrid (all three) | dense recall@10 vs exact |",
             "|---|---|---|---|---|---|---|"]
    for case, row in report["results"].items():
        cells = []
        for method in ("bm25", "splade", "dense", "hybrid"):
            r = row[method]
            cells.append(f"{r['search_ms']['p50']:.2f} / {r['search_ms']['p95']:.2f} ({r['mean_hits']:.1f})")
        recall = row.get("dense_recall@10_vs_exact")
        lines.append(f"| {case} | {row.get('matches', report['docs']):,} | " + " | ".join(cells)
                     + f" | {'-' if recall is None else f'{recall:.3f}'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True, help="An index of --source with splade and dense.")
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=Path("data/filters"))
    parser.add_argument("--out", type=Path, default=Path("reports/bench/filters"))
    parser.add_argument("--faiss", default="HNSW32")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--keep", action="store_true", help="Keep the indexes (for --reuse).")
    parser.add_argument("--reuse", action="store_true", help="Search the indexes a --keep run left (their build "
                                                             "stages come from their manifests).")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    corpus_dir = args.work / f"corpus-{args.docs}"
    if not (corpus_dir / "corpus.jsonl").exists():
        generate(args.source, args.index, args.docs, corpus_dir, seed=args.seed)
    with_meta = args.work / "corpus-with-metadata.jsonl"
    add_metadata(corpus_dir / "corpus.jsonl", with_meta, args.seed)
    root = IndexRoot(args.work / "indexes")
    builds = {"with_metadata": build(with_meta, corpus_dir / "vectors", "filters", root, args.faiss, args.reuse),
              "without_metadata": build(corpus_dir / "corpus.jsonl", corpus_dir / "vectors", "plain", root, args.faiss,
                                        args.reuse)}
    print("builds:", builds, flush=True)
    queries = [str(obj["text"]) for _, obj in read_jsonl_objects(corpus_dir / "queries.jsonl")][: args.queries]
    searcher = Searcher.open(root.resolve("filters"), OpenOptions(verify="off"))
    try:
        results = measure(searcher, queries)
    finally:
        searcher.close()
    report = {"command": "python -m eval.bench.filters " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in (None, False, True)),
              "docs": args.docs, "faiss": args.faiss, "queries": len(queries), "build": builds, "results": results,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "filters.json").write_text(json.dumps(report, indent=2))
    (args.out / "filters.md").write_text(markdown(report))
    print(markdown(report))
    if not args.keep:
        shutil.rmtree(args.work / "indexes", ignore_errors=True)


if __name__ == "__main__":
    main()
