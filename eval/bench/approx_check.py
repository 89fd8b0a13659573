"""The done-when check of issue 37: default searches of an index built with ``--vectors`` and ``--faiss HNSW32``,
against exact answers computed here from the vectors themselves.

    python -m service.cli index build data/scale/100k --name s100k --index-root data/i37b \\
        --retrievers splade,dense --faiss HNSW32 --no-splade-doc-vectors --vectors data/scale/100k/vectors --quiet
    python -m eval.bench.approx_check --index data/i37b/s100k --vectors data/scale/100k/vectors \\
        --queries data/scale/100k --out reports/approx_check/100k.json

The exact top 10 of every query come from the vectors folder, never from our engine: SPLADE's as one scipy sparse
product of the quantized query impacts with ``splade.jsonl``'s document impacts, dense's as one numpy product with
``dense.npy``. The queries are encoded once, before anything is timed, by the index's own encoders (the searcher's
``encode_queries``: SPLADE's quantized impacts, dense's unit vectors), and are then given to
``Searcher.open(index)``, opened with no options, as a client's vectors (``batch_search(vectors=...)``: SPLADE's
impacts divided by the index's scale, which it quantizes back). Each query is searched alone, one call at a time;
the time is the whole library call (request parsing, search, ranking, hits), query encoding excluded. Rows:
``splade`` and ``dense`` alone (k=10), and ``hybrid`` (both, RRF, k=10), each over ``--rounds`` passes after one
warm-up pass, interleaved (each call a different query from the call before: a hybrid search right after the same
query's SPLADE search would find its rows in the CPU's caches). Recall@10 is the share of the exact top 10 returned (by id);
``recall_ties`` also counts a hit whose score reaches the exact 10th score (ties at the cut, which an engine breaks
its own way). The machine's load average is recorded before and after: on a shared machine, times are upper bounds;
``p50_of_fastest_ms`` (the median over queries of each query's fastest round) is what the work costs with less of
the other jobs' interference in it. The targets are checked on the plain p50 of every call.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

TARGETS = {"splade_p50_ms": 0.6, "splade_recall_at_10": 0.98, "dense_recall_at_10": 0.95}


def read_sparse(path: Path) -> tuple[list[str], dict[str, int], sparse.csr_matrix]:
    """Ids, vocabulary and document impacts (CSR) of ``splade.jsonl``: ``{"id", "vector": {token: impact}}`` a line."""
    import orjson

    ids: list[str] = []
    vocab: dict[str, int] = {}
    indptr, terms, weights = [0], [], []
    with path.open("rb") as handle:
        for line in handle:
            record = orjson.loads(line)
            ids.append(record["id"])
            terms.extend(vocab.setdefault(t, len(vocab)) for t in record["vector"])
            weights.extend(record["vector"].values())
            indptr.append(len(terms))
    return ids, vocab, sparse.csr_matrix((np.asarray(weights, np.float64), np.asarray(terms, np.int64),
                                          np.asarray(indptr, np.int64)), shape=(len(ids), len(vocab)))


def read_dense(folder: Path) -> tuple[list[str], np.ndarray]:
    """Ids and vectors of ``dense.npy`` (with ``dense.ids.jsonl``: one JSON string a line)."""
    ids = [json.loads(line) for line in (folder / "dense.ids.jsonl").read_text().splitlines() if line.strip()]
    return ids, np.load(folder / "dense.npy", mmap_mode="r")


def exact_sparse(docs: sparse.csr_matrix, vocab: dict[str, int], queries: Sequence[dict[str, int]], k: int = 10
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each query's exact top ``k`` (rows, scores; score descending, then row), from one sparse product."""
    indptr, terms, weights = [0], [], []
    for vector in queries:
        kept = [(vocab[t], w) for t, w in vector.items() if t in vocab]
        terms += [t for t, _ in kept]
        weights += [float(w) for _, w in kept]
        indptr.append(len(terms))
    rows = sparse.csr_matrix((np.asarray(weights), np.asarray(terms, np.int64), np.asarray(indptr, np.int64)),
                             shape=(len(queries), len(vocab)))
    scores = (rows @ docs.T).toarray()
    return [_top(row, k, positive=True) for row in scores]


def exact_dense(docs: np.ndarray, queries: np.ndarray, k: int = 10) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each query's exact top ``k`` by inner product (float64 products of the stored float32 vectors)."""
    out = []
    matrix = np.asarray(docs, np.float64)
    for start in range(0, len(queries), 32):
        scores = np.asarray(queries[start:start + 32], np.float64) @ matrix.T
        out += [_top(row, k) for row in scores]
    return out


def _top(row: np.ndarray, k: int, positive: bool = False) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((np.arange(len(row)), -row))[:k]
    keep = row[order] > 0 if positive else np.ones(len(order), bool)
    return order[keep], row[order][keep]


def recall(found: Sequence[int], scores: Sequence[float], truth: tuple[np.ndarray, np.ndarray], tolerance: float
           ) -> tuple[float, float]:
    """(share of the exact top 10 found by id, the same with hits reaching the exact 10th score counted)."""
    rows, exact_scores = truth
    if not len(rows):
        return 1.0, 1.0
    wanted = min(10, len(rows))
    same = len(set(found[:10]) & set(rows.tolist())) / wanted
    tied = min(wanted, sum(1 for s in scores[:10] if s >= exact_scores[wanted - 1] - tolerance)) / wanted
    return same, tied


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main(argv: Sequence[str] | None = None) -> None:
    from indexes.indexing.tuning import read_queries
    from indexes.storage.docstore.manifest import Manifest
    from retrieval.search.pipeline import Searcher

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", type=Path, required=True, help="Built with --vectors VECTORS --faiss HNSW32.")
    parser.add_argument("--vectors", type=Path, required=True, help="The vectors folder the index was built from.")
    parser.add_argument("--queries", type=Path, required=True, help="A BEIR folder (its queries.jsonl) or file.")
    parser.add_argument("--limit", type=int, default=1000, help="At most this many queries.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("reports/approx_check/100k.json"))
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    queries_file = args.queries / "queries.jsonl" if args.queries.is_dir() else args.queries
    texts = read_queries(queries_file, args.limit)
    manifest = Manifest.read(args.index)
    scale = float(manifest.retrievers["splade"].parameters["scale"])

    started = time.perf_counter()
    searcher = Searcher.open(args.index)  # no options: what a user gets
    opened = time.perf_counter() - started
    splade_q = searcher.searchers["splade"].encode_queries(texts)  # type: ignore[attr-defined]
    dense_q = np.asarray(searcher.searchers["dense"].encode_queries(texts), np.float32)  # type: ignore[attr-defined]
    given_splade = [{t: w / scale for t, w in v.items()} for v in splade_q]
    given_dense = [v.tolist() for v in dense_q]

    started = time.perf_counter()
    sparse_ids, vocab, docs = read_sparse(args.vectors / "splade.jsonl")
    splade_truth = exact_sparse(docs, vocab, splade_q)
    dense_ids, dense_docs = read_dense(args.vectors)
    dense_truth = exact_dense(dense_docs, dense_q)
    exact_seconds = time.perf_counter() - started
    row_sparse = {doc_id: i for i, doc_id in enumerate(sparse_ids)}
    row_dense = {doc_id: i for i, doc_id in enumerate(dense_ids)}
    del docs

    calls = {
        "splade": lambda i: searcher.batch_search([""], vectors={"splade": [given_splade[i]]}, k=10,
                                                  retrievers=["splade"])[0],
        "dense": lambda i: searcher.batch_search([""], vectors={"dense": [given_dense[i]]}, k=10,
                                                 retrievers=["dense"])[0],
        "hybrid": lambda i: searcher.batch_search([""], vectors={"splade": [given_splade[i]], "dense": [given_dense[i]]},
                                                  k=10, retrievers=["splade", "dense"])[0],
    }
    times: dict[str, list[tuple[int, float]]] = {name: [] for name in calls}
    took: dict[str, list[float]] = {name: [] for name in calls}
    recalls: dict[str, list[tuple[float, float]]] = {"splade": [], "dense": []}
    n = len(texts)
    for round_ in range(args.rounds + 1):  # round 0 warms up (compiled kernels, caches)
        for at in range(n):
            for shift, (name, call) in enumerate(calls.items()):
                # Consecutive calls search different queries (a third of the list apart), so no row finds the
                # document rows its query touches still in the CPU's caches from the row before.
                i = (at + shift * (n // len(calls))) % n
                started = time.perf_counter()
                result = call(i)
                spent = (time.perf_counter() - started) * 1000
                if round_ == 0:
                    if name == "splade":
                        recalls[name].append(recall([row_sparse[h.id] for h in result.hits],
                                                    [h.score for h in result.hits], splade_truth[i], 1e-3))
                    elif name == "dense":
                        recalls[name].append(recall([row_dense[h.id] for h in result.hits],
                                                    [h.score for h in result.hits], dense_truth[i], 1e-5))
                    continue
                times[name].append((i, spent))
                took[name].append(result.took_ms)
    rows: dict[str, Any] = {}
    for name in calls:
        spent = [t for _, t in times[name]]
        fastest = np.full(n, np.inf)
        for i, t in times[name]:
            fastest[i] = min(fastest[i], t)  # each query's best round
        rows[name] = {"p50_ms": percentile(spent, 50), "p99_ms": percentile(spent, 99),
                      "mean_ms": float(np.mean(spent)), "took_p50_ms": percentile(took[name], 50),
                      "p50_of_fastest_ms": percentile(fastest.tolist(), 50), "samples": len(times[name])}
        if name in recalls:
            rows[name]["recall_at_10"] = float(np.mean([r for r, _ in recalls[name]]))
            rows[name]["recall_ties_at_10"] = float(np.mean([t for _, t in recalls[name]]))
    entry = {n: manifest.retrievers[n] for n in ("splade", "dense")}
    checks = {
        "splade_p50_ms": {"measured": rows["splade"]["p50_ms"], "target": TARGETS["splade_p50_ms"],
                          "met": rows["splade"]["p50_ms"] <= TARGETS["splade_p50_ms"]},
        "splade_recall_at_10": {"measured": rows["splade"]["recall_at_10"], "target": TARGETS["splade_recall_at_10"],
                                "met": rows["splade"]["recall_at_10"] >= TARGETS["splade_recall_at_10"]},
        "dense_recall_at_10": {"measured": rows["dense"]["recall_at_10"], "target": TARGETS["dense_recall_at_10"],
                               "met": rows["dense"]["recall_at_10"] >= TARGETS["dense_recall_at_10"]},
    }
    report = {
        "index": str(args.index), "vectors": str(args.vectors), "queries": len(texts), "rounds": args.rounds,
        "documents": len(sparse_ids), "open_seconds": round(opened, 2), "exact_seconds": round(exact_seconds, 2),
        "search_tuning": {n: {k: v for k, v in (e.search_tuning or {}).items() if k != "grid"} for n, e in entry.items()},
        "factory": entry["dense"].parameters.get("factory"),
        "engines": {"splade_probes": getattr(searcher.searchers["splade"].matrix, "probes", None),  # type: ignore[attr-defined]
                    "dense_ef_search": searcher.searchers["dense"].index.ef_search},  # type: ignore[attr-defined]
        "rows": rows, "checks": checks,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_before": load_before,
                    "load_after": os.getloadavg()},
    }
    searcher.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    for name, row in rows.items():
        extra = (f"  recall@10 {row['recall_at_10']:.4f} (ties {row['recall_ties_at_10']:.4f})"
                 if "recall_at_10" in row else "")
        print(f"{name:7s} p50 {row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms  (p50 of each query's fastest round "
              f"{row['p50_of_fastest_ms']:.3f} ms){extra}")
    for name, check in checks.items():
        print(f"{name}: {check['measured']:.4f} against {check['target']} -> {'met' if check['met'] else 'NOT MET'}")
    print(f"load average before {load_before}, after {report['machine']['load_after']}; wrote {args.out}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
