"""Build time, size, memory and latency as the corpus grows: 10k, 100k, 1M pre-encoded documents.

    python -m eval.bench.scale_bench --source ../shared/data/cranfield --index data/indexes/beir-cranfield \\
        --sizes 10000,100000,1000000 --work data/scale --out reports/scale \\
        [--faiss HNSW32] [--query-mode splade=onnx-int8 --query-mode dense=onnx-int8] [--seconds 10]

Per size: the corpus and its vectors come from :mod:`eval.bench.scale` (resampled, seeded); ``hybrid index
build --vectors`` builds them (BM25 from text, impacts and FAISS from the vectors), timed per stage; then
each retriever and the hybrid are timed in the library (single queries, p50/p99) and over HTTP (one
client, and 8 clients in a closed loop), with the server's RSS at rest and its peak under load. At the
largest size, FAISS ``Flat``, ``HNSW32`` and ``IVF<nlist>,PQ32`` are built from the same dense vectors and
searched one query at a time: latency, and recall@10 against ``Flat``. Writes ``scale.json``, ``scale.md``
and ``scale.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from eval.bench.http_latency import percentiles
from eval.bench.scale import generate
from eval.bench.suite import http_bench, library_latency
from indexes.indexing.builder import build_index
from indexes.storage.docstore.corpus import read_jsonl_objects
from indexes.storage.docstore.layout import IndexRoot
from retrieval.core.options import BuildOptions, OpenOptions
from retrieval.core.settings import parse_query_modes, query_modes_text
from retrieval.search.pipeline import Searcher


def _label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k"


def _build(corpus_dir: Path, name: str, root: IndexRoot, factory: str, doc_vectors: bool) -> dict[str, Any]:
    started = time.perf_counter()
    options = BuildOptions(progress=False, faiss_factory=factory, splade_doc_vectors=doc_vectors)
    manifest = build_index(corpus_dir / "corpus.jsonl", name, root, options, vectors=corpus_dir / "vectors")
    wall = time.perf_counter() - started
    stages = {n: r.index_seconds for n, r in manifest.retrievers.items()}
    return {"wall_s": wall, "stages_s": {**stages, "docstore_and_rest": wall - sum(stages.values())},
            "size_mib": {**{n: r.size_bytes / 2**20 for n, r in manifest.retrievers.items()},
                         "docstore": manifest.docstore_bytes / 2**20},
            "total_size_mib": manifest.size_bytes / 2**20}


def faiss_variants(vectors_dir: Path, queries: np.ndarray, nlist: int) -> dict[str, Any]:
    """Flat, HNSW32 and IVF{nlist},PQ32 over the same vectors: build time, latency, recall@10 vs Flat."""
    import faiss

    data = np.load(vectors_dir / "dense.npy", mmap_mode="r")
    base = np.ascontiguousarray(data, dtype=np.float32)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    out: dict[str, Any] = {}
    truth: np.ndarray | None = None
    for factory in ("Flat", "HNSW32", f"IVF{nlist},PQ32"):
        index = faiss.index_factory(base.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        started = time.perf_counter()
        if not index.is_trained:
            sample = base[np.random.default_rng(0).choice(len(base), min(len(base), 64 * nlist), replace=False)]
            index.train(sample)
        index.add(base)
        build_s = time.perf_counter() - started
        if factory.startswith("IVF"):
            faiss.extract_index_ivf(index).nprobe = 32
        if factory.startswith("HNSW"):
            index.hnsw.efSearch = 128
        faiss.omp_set_num_threads(1)  # one query at a time, one thread: as a search request runs it
        times, found = [], []
        for q in queries:
            started = time.perf_counter()
            _, ids = index.search(q[None, :], 10)
            times.append((time.perf_counter() - started) * 1000.0)
            found.append(ids[0])
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        hits = np.stack(found)
        if truth is None:
            truth = hits
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hits, truth)]))
        out[factory] = {"build_s": build_s, "latency_ms": percentiles(times), "recall_at_10_vs_flat": recall,
                        "settings": {"HNSW32": "efConstruction 40, efSearch 128"}.get(factory,
                                     "nprobe 32" if factory.startswith("IVF") else "exact")}
        del index
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Command: `{report['command']}`", "",
             f"# Scale: {report['source']} resampled, 2 cores (machine: {report['machine']})", "",
             f"Query modes: {report['query_modes'] or 'torch'}; FAISS for the served index: {report['faiss']}; "
             f"SPLADE term vectors (for PRF): {'stored' if report['doc_vectors'] else 'not stored'}.", "",
             "| docs | build s | bm25 s | splade s | dense s | docstore+rest s | size MiB | RSS rest MiB | RSS peak MiB |"
             " bm25 p50/p99 | splade p50/p99 | dense p50/p99 | hybrid p50/p99 (library) | HTTP 1 client p50/p99 |"
             " HTTP 8 clients q/s, p50/p99 |", "|" + "---|" * 15]
    for label, r in report["sizes"].items():
        b, lib, http = r["build"], r["library"], r.get("http") or {}
        st = b["stages_s"]

        def pp(name: str) -> str:
            return f"{lib[name]['total']['p50']:.2f} / {lib[name]['total']['p99']:.2f}"

        eight = http.get("load", {}).get("8", {})
        lines.append(
            f"| {label} | {b['wall_s']:.0f} | {st.get('bm25', 0):.0f} | {st.get('splade', 0):.0f} | {st.get('dense', 0):.0f} "
            f"| {st['docstore_and_rest']:.0f} | {b['total_size_mib']:.0f} | {http.get('rest_rss_mib', 0):.0f} "
            f"| {http.get('peak_rss_mib', 0):.0f} | {pp('bm25')} | {pp('splade')} | {pp('dense')} | {pp('hybrid-rrf')} "
            f"| {http.get('single_ms', {}).get('p50', 0):.2f} / {http.get('single_ms', {}).get('p99', 0):.2f} "
            f"| {eight.get('qps', 0):.0f}, {eight.get('latency_ms', {}).get('p50', 0):.1f} / "
            f"{eight.get('latency_ms', {}).get('p99', 0):.1f} |")
    if report.get("faiss_variants"):
        lines += ["", f"FAISS at {report['faiss_variants_size']} documents (one query at a time, one thread):", "",
                  "| index | build s | p50 ms | p99 ms | recall@10 vs Flat | settings |", "|---|---|---|---|---|---|"]
        for factory, v in report["faiss_variants"].items():
            lines.append(f"| {factory} | {v['build_s']:.1f} | {v['latency_ms']['p50']:.3f} | {v['latency_ms']['p99']:.3f} "
                         f"| {v['recall_at_10_vs_flat']:.4f} | {v['settings']} |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["documents"] for r in report["sizes"].values()]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name in ("bm25", "splade", "dense", "hybrid-rrf"):
        axes[0].plot(sizes, [r["library"][name]["total"]["p50"] for r in report["sizes"].values()], "o-", label=name)
    axes[0].set(xscale="log", yscale="log", xlabel="documents", ylabel="p50 ms (library)", title="Latency")
    axes[0].legend()
    for stage in ("bm25", "splade", "dense", "docstore_and_rest"):
        axes[1].plot(sizes, [r["build"]["stages_s"].get(stage, 0) for r in report["sizes"].values()], "o-", label=stage)
    axes[1].set(xscale="log", yscale="log", xlabel="documents", ylabel="seconds", title="Build stages")
    axes[1].legend()
    axes[2].plot(sizes, [r["build"]["total_size_mib"] for r in report["sizes"].values()], "o-", label="on disk")
    axes[2].plot(sizes, [(r.get("http") or {}).get("peak_rss_mib", 0) for r in report["sizes"].values()], "o-",
                 label="server RSS peak")
    axes[2].set(xscale="log", yscale="log", xlabel="documents", ylabel="MiB", title="Memory and disk")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--work", type=Path, default=Path("data/scale"))
    parser.add_argument("--out", type=Path, default=Path("reports/scale"))
    parser.add_argument("--faiss", default="HNSW32", help="FAISS factory of the served indexes.")
    parser.add_argument("--no-doc-vectors", action="store_true", help="Build without SPLADE term vectors (no SPLADE PRF).")
    parser.add_argument("--query-mode", action="append", default=[], metavar="NAME=MODE")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0, help="8-client load per size.")
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--no-faiss-variants", action="store_true")
    parser.add_argument("--keep", action="store_true", help="Keep generated corpora and indexes.")
    args = parser.parse_args()
    modes = parse_query_modes(args.query_mode)
    if modes:  # the HTTP phase's server reads its settings from the environment
        os.environ["HYBRID_QUERY_MODES"] = query_modes_text(modes)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    root = IndexRoot(args.work / "indexes")
    report: dict[str, Any] = {
        "command": "python -m eval.bench.scale_bench " + " ".join(sys.argv[1:]), "source": str(args.source),
        "faiss": args.faiss, "doc_vectors": not args.no_doc_vectors, "query_modes": modes, "sizes": {},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    queries: list[str] = []
    for n in sizes:
        label = _label(n)
        corpus_dir = args.work / label
        print(f"[{label}] generating", flush=True)
        generated = generate(args.source, args.index, n, corpus_dir)
        queries = [obj["text"] for _, obj in read_jsonl_objects(corpus_dir / "queries.jsonl")][: args.queries]
        print(f"[{label}] building", flush=True)
        build = _build(corpus_dir, f"scale-{label}", root, args.faiss, not args.no_doc_vectors)
        searcher = Searcher.open(root.resolve(f"scale-{label}"), OpenOptions(query_modes=modes, verify="off"))
        try:
            library = library_latency(searcher, queries, 10)
        finally:
            searcher.close()
        entry: dict[str, Any] = {"documents": n, "generation": generated, "build": build, "library": library}
        if not args.no_http:
            print(f"[{label}] HTTP", flush=True)
            entry["http"] = http_bench(root.root, f"scale-{label}", queries, [8], args.seconds, 10)
        report["sizes"][label] = entry
        (args.out / "scale.json").write_text(json.dumps(report, indent=1))
        print(json.dumps({label: {"build": build, "hybrid_p50": library["hybrid-rrf"]["total"]["p50"]}}), flush=True)
        if not args.keep and n != sizes[-1]:
            root.delete(f"scale-{label}")
    largest = _label(sizes[-1])
    if not args.no_faiss_variants:
        print(f"[{largest}] FAISS variants", flush=True)
        searcher = Searcher.open(root.resolve(f"scale-{largest}"), OpenOptions(verify="off"), retrievers=["dense"])
        try:
            vectors = searcher.searchers["dense"].encode_queries(queries)  # type: ignore[attr-defined]
        finally:
            searcher.close()
        nlist = max(16, min(4096, int(4 * np.sqrt(sizes[-1]))))
        report["faiss_variants"] = faiss_variants(args.work / largest / "vectors", vectors, nlist)
        report["faiss_variants_size"] = sizes[-1]
    (args.out / "scale.json").write_text(json.dumps(report, indent=1))
    (args.out / "scale.md").write_text(markdown(report))
    plot(report, args.out / "scale.png")
    print(markdown(report))
    if not args.keep:
        root.delete(f"scale-{largest}")
        for n in sizes:
            shutil.rmtree(args.work / _label(n), ignore_errors=True)


if __name__ == "__main__":
    main()
