"""Scale-out on Ray, measured on this machine: build throughput with 1 and 2 encoder workers, search latency over
HTTP with S = 1, 2, 4 shards served by Ray Serve against ``hybrid serve`` in one process, and the nDCG@10 cost of
per-shard BM25 statistics on remote shards.

    python -m eval.bench.ray_scale build --corpus ../shared/data/cranfield --docs 512 --workers 1,2 \\
        --work data/ray --out reports/bench/ray
    python -m eval.bench.ray_scale latency --corpus data/shards/corpus-10000 --shards 1,2,4 --queries 200 \\
        --work data/ray --out reports/bench/ray
    python -m eval.bench.ray_scale ndcg --dataset ../shared/data/cranfield --shards 2,3,4 --work data/ray \\
        --out reports/bench/ray

``build``: the first ``--docs`` documents of the corpus encoded (SPLADE and dense) in one process
(``encode_corpus``) and on a local Ray cluster with N encoder actors (``encode_on_ray``); documents per second of
the whole encode step, start-up of the actors included. ``latency``: the corpus folder of
:mod:`eval.bench.scale` (its ``vectors/`` and ``queries.jsonl``), built per S from the vectors; single queries over
HTTP, k 10, depth 100, hybrid RRF of the three retrievers and each retriever alone, p50/p99 of the client's
latency. ``ndcg``: BM25-only builds of a BEIR dataset in S shards, searched in one process (one ``MultiReader``,
global statistics) and through Ray Serve (each shard its own statistics). Each writes ``NAME.json`` and
``NAME.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from eval.bench.http_latency import free_port, percentiles
from indexes.indexing.builder import build_index, encode_corpus
from indexes.storage.docstore.corpus import read_jsonl_objects, resolve_corpus_file
from indexes.storage.docstore.layout import IndexRoot
from retrieval.core.options import BuildOptions

METHODS: dict[str, list[str] | None] = {"bm25": ["bm25"], "splade": ["splade"], "dense": ["dense"], "hybrid": None}


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}


def write(out: Path, name: str, report: dict[str, Any], lines: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1))
    (out / f"{name}.md").write_text("\n".join([f"Command: `{report['command']}`", "", *lines, ""]))
    print("\n".join(lines))


def first_docs(corpus: Path, count: int, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"corpus-{count}.jsonl"
    rows = []
    for _, row in read_jsonl_objects(resolve_corpus_file(corpus)):
        if str(row.get("text", "")).strip():
            rows.append(row)
        if len(rows) == count:
            break
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return target


def bench_build(args: argparse.Namespace) -> None:
    from indexes.indexing.ray_build import encode_on_ray

    work = Path(args.work)
    corpus = first_docs(Path(args.corpus), args.docs, work)
    options = BuildOptions(retrievers=BuildOptions().retrievers[1:], progress=False, batch_size=32)
    runs: dict[str, Any] = {}
    target = work / "vectors-build"
    shutil.rmtree(target, ignore_errors=True)
    started = time.perf_counter()
    encode_corpus(corpus, target, options)
    seconds = time.perf_counter() - started
    runs["in-process"] = {"seconds": round(seconds, 2), "docs_per_s": round(args.docs / seconds, 2)}
    print(f"in-process: {seconds:.1f} s", flush=True)
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False, log_to_driver=False)
    for workers in [int(w) for w in args.workers.split(",")]:
        shutil.rmtree(target, ignore_errors=True)
        started = time.perf_counter()
        encode_on_ray(corpus, target, options.with_(ray="local", ray_workers=workers))
        seconds = time.perf_counter() - started
        runs[f"ray-{workers}"] = {"seconds": round(seconds, 2), "docs_per_s": round(args.docs / seconds, 2)}
        print(f"ray, {workers} worker(s): {seconds:.1f} s", flush=True)
    ray.shutdown()
    report = {"command": " ".join(["python -m eval.bench.ray_scale", *sys.argv[1:]]), "docs": args.docs,
              "retrievers": "splade,dense", "machine": machine(), "runs": runs}
    lines = [f"# Encoding {args.docs} documents (SPLADE + dense), in one process and on a local Ray cluster, "
             f"{os.cpu_count()} cores", "", "| run | seconds | docs/s |", "|---|---|---|"]
    lines += [f"| {name} | {r['seconds']} | {r['docs_per_s']} |" for name, r in runs.items()]
    write(Path(args.out), "build", report, lines)


def timed_queries(client: httpx.Client, index: str, queries: list[str], retrievers: list[str] | None
                  ) -> tuple[list[float], list[list[str]]]:
    for q in queries[:10]:
        client.post(f"/v1/indexes/{index}/search", json={"query": q, "k": 10, "retrievers": retrievers, "depth": 100})
    times, tops = [], []
    for q in queries:
        started = time.perf_counter()
        response = client.post(f"/v1/indexes/{index}/search",
                               json={"query": q, "k": 10, "retrievers": retrievers, "depth": 100})
        times.append((time.perf_counter() - started) * 1000.0)
        response.raise_for_status()
        tops.append([h["id"] for h in response.json()["hits"]])
    return times, tops


def serve(root: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """``hybrid serve`` on ``root`` (``--ray local``: as a Ray Serve application on its own local cluster), ready."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--index-root", str(root), "--port",
                             str(port), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/v1/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError("hybrid serve did not become ready")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as a user stops it (Ray Serve shuts its application and the local cluster down)."""
    import signal

    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def bench_latency(args: argparse.Namespace) -> None:
    source = Path(args.corpus)
    queries = [str(q["text"]) for _, q in read_jsonl_objects(source / "queries.jsonl")][: args.queries]
    work = Path(args.work) / "latency"
    results: dict[str, Any] = {}
    tops: dict[str, dict[str, list[list[str]]]] = {}
    for shards in [int(s) for s in args.shards.split(",")]:
        root = work / f"s{shards}"
        if not (root / "bench").exists():
            shutil.rmtree(root, ignore_errors=True)
            build_index(source / "corpus.jsonl", "bench", IndexRoot(root),
                        BuildOptions(progress=False, shards=shards, faiss_factory=args.faiss), vectors=source / "vectors")
        runs: dict[str, Any] = {}
        if shards == 1:
            proc, url = serve(root)
            try:
                with httpx.Client(base_url=url, timeout=60) as client:
                    for method, retrievers in METHODS.items():
                        times, top = timed_queries(client, "bench", queries, retrievers)
                        runs[f"hybrid serve/{method}"] = percentiles(times)
                        tops.setdefault("in-process", {})[method] = top
                        print(f"S=1 hybrid serve {method}: p50 {np.median(times):.2f} ms", flush=True)
            finally:
                stop(proc)
        proc, url = serve(root, "--ray", "local")
        try:
            with httpx.Client(base_url=url, timeout=60) as client:
                for method, retrievers in METHODS.items():
                    times, top = timed_queries(client, "bench", queries, retrievers)
                    runs[f"ray/{method}"] = percentiles(times)
                    tops.setdefault(f"ray-s{shards}", {})[method] = top
                    print(f"S={shards} ray {method}: p50 {np.median(times):.2f} ms", flush=True)
        finally:
            stop(proc)
        results[str(shards)] = runs
    base = tops["in-process"]
    overlap = {name: {m: round(float(np.mean([len(set(a) & set(b)) / max(len(a), 1) for a, b in zip(base[m], t[m])])), 4)
                      for m in t} for name, t in tops.items()}
    report = {"command": " ".join(["python -m eval.bench.ray_scale", *sys.argv[1:]]), "queries": len(queries),
              "faiss": args.faiss, "machine": machine(), "latency_ms": results, "top10_overlap_vs_in_process": overlap}
    lines = [f"# Search latency over HTTP, {len(queries)} queries, k 10, depth 100, FAISS {args.faiss}, "
             f"{os.cpu_count()} cores (client, servers and Ray on one machine)", "",
             "| S | server | method | p50 ms | p99 ms | top-10 overlap with hybrid serve |", "|---|---|---|---|---|---|"]
    for shards, runs in results.items():
        for key, p in runs.items():
            server, method = key.split("/")
            name = "in-process" if server == "hybrid serve" else f"ray-s{shards}"
            lines.append(f"| {shards} | {server} | {method} | {p['p50']:.2f} | {p['p99']:.2f} | {overlap[name][method]} |")
    write(Path(args.out), "latency", report, lines)


def bench_ndcg(args: argparse.Namespace) -> None:
    from eval.beir_data import load_dataset
    from eval.metrics import evaluate, mean, parse_metrics
    from retrieval.search.pipeline import Searcher

    dataset = load_dataset(Path(args.dataset))
    ids = list(dataset.queries)
    texts = [dataset.queries[i] for i in ids]
    work = Path(args.work) / "ndcg"
    ndcg10 = parse_metrics("ndcg@10")
    rows: dict[str, Any] = {}
    for shards in [int(s) for s in args.shards.split(",")]:
        root = work / f"s{shards}"
        if not (root / "bm25").exists():
            shutil.rmtree(root, ignore_errors=True)
            build_index(Path(args.dataset), "bm25", IndexRoot(root),
                        BuildOptions(retrievers=BuildOptions().retrievers[:1], progress=False, shards=shards))
        local = Searcher.open(IndexRoot(root).resolve("bm25"))
        run_local = {q: {h.id: h.score for h in local.search(t, k=100).hits} for q, t in zip(ids, texts)}
        local.close()
        proc, url = serve(root, "--ray", "local")
        run_remote = {}
        try:
            with httpx.Client(base_url=url, timeout=60) as client:
                for q, t in zip(ids, texts):
                    hits = client.post("/v1/indexes/bm25/search", json={"query": t, "k": 100}).json()["hits"]
                    run_remote[q] = {h["id"]: h["score"] for h in hits}
        finally:
            stop(proc)
        a = mean(evaluate(run_local, dataset.qrels, ndcg10)["ndcg@10"])
        b = mean(evaluate(run_remote, dataset.qrels, ndcg10)["ndcg@10"])
        rows[str(shards)] = {"in_process_ndcg10": round(a, 4), "remote_ndcg10": round(b, 4), "delta": round(b - a, 4)}
        print(f"S={shards}: BM25 nDCG@10 one process {a:.4f}, remote shards {b:.4f} ({b - a:+.4f})", flush=True)
    report = {"command": " ".join(["python -m eval.bench.ray_scale", *sys.argv[1:]]), "dataset": args.dataset,
              "queries": len(ids), "machine": machine(), "bm25": rows}
    lines = [f"# BM25 nDCG@10 on {Path(args.dataset).name}: global statistics (one process) against per-shard "
             "statistics (shards on Ray Serve)", "", "| S | one process | remote shards | difference |",
             "|---|---|---|---|"]
    lines += [f"| {s} | {r['in_process_ndcg10']} | {r['remote_ndcg10']} | {r['delta']:+.4f} |" for s, r in rows.items()]
    write(Path(args.out), "ndcg", report, lines)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build")
    build.add_argument("--corpus", required=True)
    build.add_argument("--docs", type=int, default=512)
    build.add_argument("--workers", default="1,2")
    latency = commands.add_parser("latency")
    latency.add_argument("--corpus", required=True, help="a corpus folder of eval.bench.scale (with vectors/)")
    latency.add_argument("--shards", default="1,2,4")
    latency.add_argument("--queries", type=int, default=200)
    latency.add_argument("--faiss", default="HNSW32")
    ndcg = commands.add_parser("ndcg")
    ndcg.add_argument("--dataset", required=True)
    ndcg.add_argument("--shards", default="2,3,4")
    for sub in (build, latency, ndcg):
        sub.add_argument("--work", default="data/ray")
        sub.add_argument("--out", default="reports/bench/ray")
    args = parser.parse_args()
    {"build": bench_build, "latency": bench_latency, "ndcg": bench_ndcg}[args.command](args)


if __name__ == "__main__":
    main()
