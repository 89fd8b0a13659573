"""``hybrid bench``: indexing, latency, throughput and side-by-side baselines in one run.

Everything is measured in the same process and run, on the same index and queries:

* indexing: docs/s per retriever, encoding and index writing apart, and index size (from the build);
* library latency per retriever and for the RRF hybrid, split into encode / search / fuse;
* batch throughput against the single-query rate;
* HTTP latency and throughput at several client counts (bounded), errors and the server's peak RSS;
* baselines on the same inputs: Pyserini's ``LuceneSearcher`` and ``LuceneImpactSearcher`` on our
  Lucene indexes, raw FAISS on our vectors, ``bm25s`` on the same texts, Seismic on the same SPLADE
  vectors; each reported as our time / baseline time;
* Qdrant Edge (``qdrant-edge-py``, Qdrant's engine in-process) fed our SPLADE and dense vectors, with RRF
  and DBSF hybrids, interleaved with our search query by query (``eval/bench/qdrant_edge.py``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eval.beir_data import load_dataset
from eval.bench.http_latency import RawClient, free_port, percentiles
from eval.bench.soak import rss_kib, soak
from eval.harness import EvalOptions, ensure_index
from eval.metrics import parse_metrics
from retrieval.search.specs import parse_spec
from indexes.storage.docstore.corpus import iter_documents
from indexes.storage.docstore.manifest import Manifest
from retrieval.core.options import BuildOptions, OpenOptions
from retrieval.search.fusion import FusionConfig
from retrieval.search.pipeline import Searcher

METHODS: dict[str, tuple[list[str], FusionConfig | None]] = {
    "bm25": (["bm25"], None), "splade": (["splade"], None), "dense": (["dense"], None),
    "hybrid-rrf": (["bm25", "splade", "dense"], FusionConfig(method="rrf")),
}


@dataclass
class BenchOptions:
    dataset: Path
    index_root: Path
    out: Path
    queries: int = 200
    clients: Sequence[int] = (1, 4, 16, 64)
    seconds: float = 15.0
    http: bool = True
    baselines: bool = True
    k: int = 10
    build: BuildOptions = field(default_factory=lambda: BuildOptions(progress=False))
    open: OpenOptions = field(default_factory=OpenOptions)


def _time_each(fn: Callable[[str], Any], queries: Sequence[str], warmup: int = 5) -> list[float]:
    for q in queries[:warmup]:
        fn(q)
    out = []
    for q in queries:
        started = time.perf_counter()
        fn(q)
        out.append((time.perf_counter() - started) * 1000.0)
    return out


def library_latency(searcher: Searcher, queries: Sequence[str], k: int) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for name, (retrievers, fusion) in METHODS.items():
        stages: dict[str, list[float]] = {}
        for q in queries[:5]:
            searcher.search(q, k=k, retrievers=retrievers, fusion=fusion)
        for q in queries:
            result = searcher.search(q, k=k, retrievers=retrievers, fusion=fusion)
            stages.setdefault("total", []).append(result.took_ms)
            per_kind: dict[str, float] = {}
            for stage, ms in result.timings_ms.items():
                kind = stage.rsplit("_", 1)[-1]  # encode / search / fuse, summed over retrievers
                per_kind[kind] = per_kind.get(kind, 0.0) + ms
            for kind, ms in per_kind.items():
                stages.setdefault(kind, []).append(ms)
        report[name] = {stage: percentiles(v) for stage, v in stages.items()}
        started = time.perf_counter()
        searcher.batch_search(list(queries), k=k, retrievers=retrievers, fusion=fusion)
        batch_qps = len(queries) / (time.perf_counter() - started)
        single_qps = 1000.0 / statistics.fmean(stages["total"])
        report[name]["batch_qps"] = batch_qps
        report[name]["single_qps"] = single_qps
        report[name]["batch_speedup"] = batch_qps / single_qps
    return report


def baselines(searcher: Searcher, folder: Path, corpus: Path, queries: Sequence[str], k: int, ours: dict[str, Any]
              ) -> dict[str, Any]:
    from pyserini.search.lucene import LuceneImpactSearcher, LuceneSearcher

    report: dict[str, Any] = {}
    # Pyserini BM25 on our index, same k1/b: search only (BM25 has no encoder).
    pyserini_bm25 = LuceneSearcher(str(folder / "bm25"))
    params = searcher.manifest.retrievers["bm25"].parameters
    pyserini_bm25.set_bm25(params["k1"], params["b"])
    base = percentiles(_time_each(lambda q: pyserini_bm25.search(q, k), queries))
    report["pyserini_bm25"] = {"latency_ms": base, "ours_over_baseline_p50": ours["bm25"]["total"]["p50"] / base["p50"]}

    # Pyserini's impact searcher on our impact index with our query encoder: encode + search.
    splade = searcher.searchers["splade"]

    class Encoder:
        def encode(self, text: str) -> dict[str, int]:
            return splade.encoder.encode_query(text, splade.quantization)

    impact = LuceneImpactSearcher(str(folder / "splade"), query_encoder=Encoder(), min_idf=-1)
    base = percentiles(_time_each(lambda q: impact.search(q, k), queries))
    report["pyserini_impact"] = {"latency_ms": base, "ours_over_baseline_p50": ours["splade"]["total"]["p50"] / base["p50"]}

    # Raw FAISS on the same vectors, with queries encoded beforehand: search only.
    import faiss

    dense = searcher.searchers["dense"]
    raw = faiss.read_index(str(folder / "dense" / "index.faiss"))
    vectors = dense.encode_queries(list(queries))
    base = percentiles(_time_each(lambda i: raw.search(vectors[int(i) : int(i) + 1], k), [str(i) for i in range(len(queries))]))
    report["raw_faiss"] = {"latency_ms": base, "ours_over_baseline_p50": ours["dense"]["search"]["p50"] / base["p50"]}

    docs = list(iter_documents(corpus))
    docs = [d for d in docs if d.contents.strip()]
    # bm25s on the same texts (its own tokenizer and stemmer-free defaults, English stop words).
    try:
        import bm25s

        started = time.perf_counter()
        retriever = bm25s.BM25(k1=params["k1"], b=params["b"])
        retriever.index(bm25s.tokenize([d.contents for d in docs], stopwords="en", show_progress=False), show_progress=False)
        build_s = time.perf_counter() - started
        tokenize = lambda q: bm25s.tokenize([q], stopwords="en", show_progress=False)  # noqa: E731
        base = percentiles(_time_each(lambda q: retriever.retrieve(tokenize(q), k=k, show_progress=False), queries))
        started = time.perf_counter()
        retriever.retrieve(bm25s.tokenize(list(queries), stopwords="en", show_progress=False), k=k, show_progress=False,
                           n_threads=1)
        report["bm25s"] = {"latency_ms": base, "batch_qps": len(queries) / (time.perf_counter() - started),
                           "index_seconds": build_s, "ours_over_baseline_p50": ours["bm25"]["total"]["p50"] / base["p50"]}
    except ImportError:
        report["bm25s"] = {"skipped": "bm25s is not installed (pip install bm25s)"}

    # Seismic on the same quantized SPLADE vectors (documents re-encoded here with our encoder).
    try:
        import seismic

        started = time.perf_counter()
        vectors_docs = []
        for start in range(0, len(docs), 256):
            batch = docs[start : start + 256]
            vectors_docs += splade.encoder.encode_documents([d.contents for d in batch], splade.quantization)
        encode_s = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "docs.jsonl"
            with path.open("w") as handle:
                for doc, vec in zip(docs, vectors_docs):
                    handle.write(json.dumps({"id": doc.id, "content": "", "vector": {t: float(w) for t, w in vec.items()}}) + "\n")
            started = time.perf_counter()
            index = seismic.SeismicIndex.build(str(path), n_postings=max(1000, len(docs)), centroid_fraction=0.1,
                                               summary_energy=0.4, doc_cut=1000, load_content=False)
            build_s = time.perf_counter() - started
        string = seismic.get_seismic_string()
        encoded = [splade.encoder.encode_query(q, splade.quantization) for q in queries]

        def seismic_search(i: str) -> Any:
            vec = encoded[int(i)]
            return index.search(i, np.array(list(vec), dtype=string), np.array(list(vec.values()), dtype=np.float32),
                                k=k, query_cut=len(vec), heap_factor=1.0)

        base = percentiles(_time_each(seismic_search, [str(i) for i in range(len(queries))]))
        report["seismic"] = {"latency_ms": base, "index_seconds": build_s, "doc_encode_seconds": encode_s,
                             "ours_over_baseline_p50": ours["splade"]["search"]["p50"] / base["p50"],
                             "note": "search only (queries encoded beforehand); ours = our splade search stage"}
    except ImportError:
        report["seismic"] = {"skipped": "pyseismic-lsr is not installed (pip install pyseismic-lsr)"}
    return report


def qdrant_baseline(searcher: Searcher, queries: Sequence[str], k: int) -> dict[str, Any]:
    try:
        import qdrant_edge  # noqa: F401
    except ImportError:
        return {"skipped": "qdrant-edge-py is not installed (pip install qdrant-edge-py==0.9.0)"}
    from eval.bench import qdrant_edge as bench

    return bench.compare(searcher, queries, k=k, depth=searcher.options.depth, rounds=1, warmup=1)


def http_bench(index_root: Path, name: str, queries: Sequence[str], clients: Sequence[int], seconds: float, k: int
               ) -> dict[str, Any]:
    import httpx

    port = free_port()
    env = {**os.environ, "HYBRID_INDEX_ROOT": str(index_root), "HYBRID_VERIFY": "size"}
    # Closed-loop clients: every one admitted (this measures throughput, not shedding: eval/bench/overload.py does).
    admit = ["--max-concurrent", str(max(clients)), "--max-queued", str(max(clients))]
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port), *admit], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/v1/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        endpoint = f"{url}/v1/indexes/{name}/search"
        paired: list[float] = []
        inside: list[float] = []
        client = RawClient()  # keep-alive http.client: the client's own cost stays out of the overhead

        def one(q: str) -> None:
            started = time.perf_counter()
            status, data = client.post(endpoint, json={"query": q, "k": k})
            if status != 200:
                raise RuntimeError(f"search answered HTTP {status}")
            # The same request's wall time minus the server's own search time (encode, search, fuse):
            # HTTP, validation, batching and JSON, measured at the same moment, so machine noise cancels.
            paired.append((time.perf_counter() - started) * 1000.0 - data["took_ms"])
            if data.get("_app_ms") is not None:  # of it, the part inside the application (Server-Timing)
                inside.append(data["_app_ms"] - data["took_ms"])

        single = percentiles(_time_each(one, queries))
        rest_kib = rss_kib(proc.pid)
        load = {str(c): soak(url, name, proc.pid, c, seconds) for c in clients}
        return {"single_ms": single, "serving_overhead_ms": percentiles(paired[-len(queries):]),
                "app_overhead_ms": percentiles(inside[-len(queries):]) if inside else None, "load": load,
                "rest_rss_mib": rest_kib / 1024,
                "peak_rss_mib": max(r.get("rss_kib", {}).get("peak", 0) for r in load.values()) / 1024}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run(options: BenchOptions) -> dict[str, Any]:
    dataset = load_dataset(options.dataset)
    eval_options = EvalOptions(methods=[parse_spec("bm25")], metrics=parse_metrics("ndcg@10"), out=options.out,
                               index_root=options.index_root, build=options.build)
    log: list[str] = []
    folder = ensure_index(dataset, ["bm25", "splade", "dense"], eval_options, log)
    manifest = Manifest.read(folder)
    queries = list(dataset.queries.values())[: options.queries]
    searcher = Searcher.open(folder, options.open)
    report: dict[str, Any] = {
        "dataset": dataset.name, "documents": manifest.doc_count, "queries": len(queries), "k": options.k,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "device": options.build.device},
        "index": log,
        "query_modes": dict(options.open.query_modes),  # our retrievers' query modes (empty: torch)
        "indexing": {name: {"docs_per_s": manifest.doc_count / r.build_seconds if r.build_seconds else None,
                            "encode_docs_per_s": manifest.doc_count / r.encode_seconds if r.encode_seconds else None,
                            "index_docs_per_s": manifest.doc_count / r.index_seconds if r.index_seconds else None,
                            **{k: v for k, v in asdict(r).items() if k in ("encode_seconds", "index_seconds", "size_bytes")}}
                     for name, r in manifest.retrievers.items()},
    }
    report["library"] = library_latency(searcher, queries, options.k)
    if options.baselines:
        report["baselines"] = baselines(searcher, folder, dataset.corpus, queries, options.k, report["library"])
        report["qdrant_edge"] = qdrant_baseline(searcher, queries, options.k)
    searcher.close()
    if options.http:
        report["http"] = http_bench(options.index_root, folder.name.split("@")[0], queries, options.clients,
                                    options.seconds, options.k)
        lib = report["library"]["hybrid-rrf"]["total"]["p50"]
        http = report["http"]["single_ms"]["p50"]
        fuse = report["library"]["hybrid-rrf"]["fuse"]["p50"]
        serving = report["http"]["serving_overhead_ms"]["p50"]
        # The target's overhead: HTTP + serialization (paired per request) + fusion.
        report["overhead"] = {"http_p50_ms": http, "library_p50_ms": lib, "serving_p50_ms": serving, "fuse_p50_ms": fuse,
                              "overhead_ms": serving + fuse, "overhead_fraction": (serving + fuse) / http}
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Benchmark: {report['dataset']} ({report['documents']} documents, {report['queries']} queries, "
             f"k={report['k']})", "", f"Machine: {report['machine']}", "", "## Indexing", "",
             "| retriever | docs/s | encode docs/s | index docs/s | size MiB |", "|---|---|---|---|---|"]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    for name, r in report["indexing"].items():
        lines.append(f"| {name} | {fmt(r['docs_per_s'])} | {fmt(r['encode_docs_per_s'])} | {fmt(r['index_docs_per_s'])} | "
                     f"{r['size_bytes'] / 2**20:.2f} |")
    lines += ["", "## Library, single query (ms)", "",
              "| method | total p50 | p95 | p99 | encode p50 | search p50 | fuse p50 | single q/s | batch q/s | batch speed-up |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["library"].items():
        g = lambda s: f"{r[s]['p50']:.2f}" if s in r else "-"  # noqa: E731
        lines.append(f"| {name} | {r['total']['p50']:.2f} | {r['total']['p95']:.2f} | {r['total']['p99']:.2f} | {g('encode')} | "
                     f"{g('search')} | {g('fuse')} | {r['single_qps']:.1f} | {r['batch_qps']:.1f} | {r['batch_speedup']:.2f}x |")
    if "baselines" in report:
        lines += ["", "## Baselines on the same inputs", "", "| baseline | p50 ms | p95 ms | ours / baseline (p50) |",
                  "|---|---|---|---|"]
        for name, r in report["baselines"].items():
            if "skipped" in r:
                lines.append(f"| {name} | - | - | skipped: {r['skipped']} |")
            else:
                lines.append(f"| {name} | {r['latency_ms']['p50']:.3f} | {r['latency_ms']['p95']:.3f} | "
                             f"{r['ours_over_baseline_p50']:.2f} |")
    if "qdrant_edge" in report:
        from eval.bench.qdrant_edge import markdown as qdrant_markdown

        q = report["qdrant_edge"]
        lines += ["", "## Qdrant Edge on the same vectors", ""]
        lines += [f"skipped: {q['skipped']}"] if "skipped" in q else qdrant_markdown(q).rstrip("\n").split("\n")
    if "http" in report:
        h = report["http"]
        lines += ["", "## HTTP (hybrid RRF, k=10)", "", f"Single client: p50 {h['single_ms']['p50']:.2f} ms, p95 "
                  f"{h['single_ms']['p95']:.2f} ms, p99 {h['single_ms']['p99']:.2f} ms; our overhead over the engines "
                  f"{report['overhead']['overhead_ms']:.2f} ms ({100 * report['overhead']['overhead_fraction']:.1f}% of p50): "
                  f"serving {report['overhead']['serving_p50_ms']:.2f} ms (per request, HTTP time minus the server's search "
                  f"time) + fusion {report['overhead']['fuse_p50_ms']:.2f} ms. "
                  f"Peak server RSS {h['peak_rss_mib']:.0f} MiB.", "",
                  "| clients | q/s | p50 ms | p95 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
        for c, r in h["load"].items():
            lat = r["latency_ms"]
            lines.append(f"| {c} | {r['qps']:.1f} | {lat['p50']:.1f} | {lat['p95']:.1f} | {lat['p99']:.1f} | {r['errors']} |")
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out: Path, command: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    report = {"command": command, **report}
    (out / "bench.json").write_text(json.dumps(report, indent=1))
    (out / "bench.md").write_text(f"Command: `{command}`\n\n" + markdown(report))
    return out / "bench.md"
