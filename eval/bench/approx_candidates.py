"""The candidates for approximate SPLADE search, measured side by side on one vectors file (issue 37's choice).

    python -m eval.bench.approx_candidates --vectors data/scale/100k/vectors --queries data/scale/100k \\
        --encoder-index data/indexes/beir-cranfield --out reports/approx_sparse/candidates-100k [--mix] [--seismic 2000]

Every candidate scores its candidates exactly (a hit's score is its dot product); they differ in what they look at:

* ``pruned m=M C=N``: static pruning: each document cut to its M heaviest impacts, that smaller matrix scored
  exhaustively, its top N re-scored exactly (one compiled pass, numba);
* ``blockmax f=F``: block-max pruning over blocks of similar documents (the clusters below, as blocks): each block's
  bound is the query's dot product with its per-term maximum impacts; blocks are scored in decreasing bound until
  ``bound x F`` falls below the 10th best score (F=1: safe, exact);
* ``clusters probes=P``: the structure the library builds (``indexes/storage/sparse/clusters.py``): the P clusters
  whose mean vectors score best;
* ``seismic qcut=Q hf=H``: pyseismic-lsr, the Seismic design (pruned posting lists cut into clustered blocks with
  summary vectors, a forward index), with ``--seismic N_POSTINGS``.

Recall@10 against scipy's exact answers; p50 is the median over queries of each query's fastest of ``--rounds`` runs
(the machine is shared: a minimum per query is what the work itself costs). Build seconds per candidate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numba
import numpy as np
from scipy import sparse

from eval.bench.approx_sparse import SEISMIC_GRID, as_rows, exact_top, load_vectors, mixed, recall, seismic_index
from indexes.storage.kernels import top_k
from indexes.storage.sparse import clusters


@numba.njit(cache=True, nogil=True)
def _rescored(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, fptr: np.ndarray, fcol: np.ndarray,
              fval: np.ndarray, columns: np.ndarray, weights: np.ndarray, candidates: int, dense: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Static pruning: the pruned matrix (CSC) scored exhaustively, its top ``candidates`` re-scored exactly through
    the full rows (CSR); returns the exact top 10 (rows, scores)."""
    scores = np.zeros(len(fptr) - 1, dtype=np.float32)
    for j in range(len(columns)):
        c, w = columns[j], weights[j]
        for p in range(indptr[c], indptr[c + 1]):
            scores[indices[p]] += np.float32(data[p]) * w
    rows, _ = top_k.select(scores, candidates, np.float32(1e-30))
    for j in range(len(columns)):
        dense[columns[j]] = weights[j]
    exact = np.empty(len(rows), dtype=np.float32)
    for i in range(len(rows)):
        s = np.float32(0)
        for p in range(fptr[rows[i]], fptr[rows[i] + 1]):
            s += dense[fcol[p]] * np.float32(fval[p])
        exact[i] = s
    for j in range(len(columns)):
        dense[columns[j]] = 0
    order = np.argsort(-exact)[:10]
    return rows[order], exact[order]


@numba.njit(cache=True, nogil=True)
def _block_maxima(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, starts: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per term (CSC over positions in block order), the blocks holding it and its maximum impact in each."""
    width = len(indptr) - 1
    counts = np.zeros(width + 1, dtype=np.int64)
    for t in range(width):
        last, at = -1, 0
        for p in range(indptr[t], indptr[t + 1]):
            while starts[at + 1] <= indices[p]:
                at += 1
            if at != last:
                counts[t + 1] += 1
                last = at
    bptr = np.cumsum(counts)
    blocks = np.empty(bptr[width], dtype=np.int32)
    maxima = np.zeros(bptr[width], dtype=np.float32)
    for t in range(width):
        q, last, at = bptr[t] - 1, -1, 0
        for p in range(indptr[t], indptr[t + 1]):
            while starts[at + 1] <= indices[p]:
                at += 1
            if at != last:
                q += 1
                blocks[q] = at
                last = at
            maxima[q] = max(maxima[q], np.float32(data[p]))
    return bptr, blocks, maxima


@numba.njit(cache=True, nogil=True)
def _blockmax(bptr: np.ndarray, blocks: np.ndarray, maxima: np.ndarray, starts: np.ndarray, fptr: np.ndarray,
              fcol: np.ndarray, fval: np.ndarray, columns: np.ndarray, weights: np.ndarray, factor: float,
              dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blocks in decreasing bound, scored exactly (forward rows in block order) until ``bound x factor`` < the
    10th best; returns the top 10 (positions, scores)."""
    bound = np.zeros(len(starts) - 1, dtype=np.float32)
    for j in range(len(columns)):
        c, w = columns[j], weights[j]
        for p in range(bptr[c], bptr[c + 1]):
            bound[blocks[p]] += w * maxima[p]
        dense[c] = w
    heap = np.full(10, -1.0, dtype=np.float32)
    ids = np.full(10, -1, dtype=np.int64)
    for b in np.argsort(-bound):
        if bound[b] <= 0 or bound[b] * factor < heap[9]:
            break
        for r in range(starts[b], starts[b + 1]):
            s = np.float32(0)
            for p in range(fptr[r], fptr[r + 1]):
                s += dense[fcol[p]] * np.float32(fval[p])
            if s > heap[9]:
                j = 9
                while j > 0 and heap[j - 1] < s:
                    heap[j], ids[j] = heap[j - 1], ids[j - 1]
                    j -= 1
                heap[j], ids[j] = s, r
    for j in range(len(columns)):
        dense[columns[j]] = 0
    return ids, heap


def _top_rows(docs: sparse.csr_matrix, m: int) -> sparse.csc_matrix:
    """Each row cut to its ``m`` heaviest impacts."""
    rows, cols, vals = [], [], []
    for r in range(docs.shape[0]):
        a, e = docs.indptr[r], docs.indptr[r + 1]
        keep = np.argsort(-docs.data[a:e], kind="stable")[:m]
        rows.append(np.full(len(keep), r))
        cols.append(docs.indices[a:e][keep])
        vals.append(docs.data[a:e][keep])
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=docs.shape).tocsc()


def candidates(docs: sparse.csr_matrix, qrows: sparse.csr_matrix, args: argparse.Namespace
               ) -> tuple[dict[str, Callable[[int], tuple[list[int], list[float]]]], dict[str, float]]:
    """Each candidate's search (query index -> top 10 rows and scores) and build seconds."""
    data = docs.astype(np.uint16)
    dense = np.zeros(docs.shape[1], dtype=np.float32)
    queries = [(qrows.indices[qrows.indptr[i]:qrows.indptr[i + 1]].astype(np.int64),
                qrows.data[qrows.indptr[i]:qrows.indptr[i + 1]].astype(np.float32)) for i in range(qrows.shape[0])]
    runs: dict[str, Callable[[int], tuple[list[int], list[float]]]] = {}
    builds: dict[str, float] = {}
    for m in (32, 64, 128):
        started = time.perf_counter()
        pruned = _top_rows(data, m)
        builds[f"pruned m={m}"] = time.perf_counter() - started
        for count in (100, 300, 1000):
            def run(i: int, pruned: Any = pruned, count: int = count) -> tuple[list[int], list[float]]:
                rows, scores = _rescored(pruned.indptr, pruned.indices, pruned.data, data.indptr, data.indices,
                                         data.data, *queries[i], count, dense)
                return rows.tolist(), scores.tolist()
            runs[f"pruned m={m} C={count}"] = run
    started = time.perf_counter()
    layout = clusters.build(data.indptr, data.indices, data.data, data.shape[1])
    held = data[layout.order]
    csc = held.tocsc()
    found = clusters.Clusters(csc, layout.starts, layout.cptr, layout.cterms, layout.cweights)
    builds["clusters"] = time.perf_counter() - started
    started = time.perf_counter()
    maxima = _block_maxima(csc.indptr, csc.indices, csc.data, layout.starts)
    builds["blockmax (over the clusters)"] = time.perf_counter() - started
    none = np.zeros(0, dtype=bool)
    for probes in (8, 16, 32, 64, 128):
        def probe(i: int, probes: int = probes) -> tuple[list[int], list[float]]:
            positions, scores, _ = found.top(csc, *queries[i], none, 10, probes)
            order = np.lexsort((positions, -scores))[:10]
            return layout.order[positions[order]].tolist(), scores[order].tolist()
        runs[f"clusters probes={probes}"] = probe
    for factor in (1.0, 0.9, 0.8, 0.7):
        def bounded(i: int, factor: float = factor) -> tuple[list[int], list[float]]:
            positions, scores = _blockmax(*maxima, layout.starts, held.indptr, held.indices, held.data, *queries[i],
                                          factor, dense)
            keep = positions >= 0
            return layout.order[positions[keep]].tolist(), scores[keep].tolist()
        runs[f"blockmax f={factor}"] = bounded
    return runs, builds


def main(argv: Sequence[str] | None = None) -> None:
    from indexes.indexing.tuning import read_queries
    from retrieval.search.pipeline import Searcher

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vectors", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True, help="A BEIR folder (its queries.jsonl) or file.")
    parser.add_argument("--encoder-index", type=Path, required=True, help="An index whose SPLADE encodes the queries.")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mix", action="store_true", help="The less clustered matrix of eval.bench.approx_sparse.")
    parser.add_argument("--seismic", type=int, default=0, metavar="N_POSTINGS", help="Add pyseismic-lsr (slow build).")
    parser.add_argument("--out", type=Path, default=Path("reports/approx_sparse/candidates"))
    args = parser.parse_args(argv)
    texts = read_queries(args.queries / "queries.jsonl" if args.queries.is_dir() else args.queries, args.limit)
    ids, vocab, docs = load_vectors(args.vectors)
    docs = mixed(docs) if args.mix else docs
    with Searcher.open(args.encoder_index, retrievers=["splade"], verify="off") as encoder_side:
        vectors = encoder_side.searchers["splade"].encode_queries(texts)  # type: ignore[attr-defined]
    qrows = as_rows(vectors, vocab)
    truth = exact_top(docs, qrows)
    runs, builds = candidates(docs, qrows, args)
    if args.seismic:
        index, builds["seismic"] = seismic_index(ids, vocab, docs, args.seismic)
        names, string = list(vocab), __import__("seismic").get_seismic_string()
        row_of = {doc_id: i for i, doc_id in enumerate(ids)}
        for cut, factor in SEISMIC_GRID:
            def seismic_run(i: int, cut: int = cut, factor: float = factor) -> tuple[list[int], list[float]]:
                a, e = qrows.indptr[i], qrows.indptr[i + 1]
                hits = index.search(str(i), np.array([names[t] for t in qrows.indices[a:e]], dtype=string),
                                    qrows.data[a:e].astype(np.float32), k=10, query_cut=cut, heap_factor=factor)
                return [row_of[h[2]] for h in hits], [float(h[1]) for h in hits]
            runs[f"seismic qcut={cut} hf={factor}"] = seismic_run
    rows: dict[str, Any] = {}
    for name, run in runs.items():
        for i in range(len(texts)):  # compile, warm
            run(i)
        best = [float("inf")] * len(texts)
        found: list[tuple[float, float]] = []
        for _ in range(args.rounds):
            for i in range(len(texts)):
                started = time.perf_counter()
                hits, scores = run(i)
                best[i] = min(best[i], (time.perf_counter() - started) * 1000.0)
                if len(found) < len(texts):
                    found.append(recall(hits, scores, truth[i]))
        rows[name] = {"p50_ms": float(np.median(best)), "recall_at_10": float(np.mean([f[0] for f in found])),
                      "recall_ties": float(np.mean([f[1] for f in found]))}
        print(f"{name}: p50 {rows[name]['p50_ms']:.3f} ms, recall@10 {rows[name]['recall_at_10']:.4f}",
              file=sys.stderr, flush=True)
    report = {"vectors": str(args.vectors), "variant": "mixed" if args.mix else "as generated", "documents": len(ids),
              "queries": len(texts), "rounds": args.rounds, "build_seconds": builds, "rows": rows,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
              "command": "python -m eval.bench.approx_candidates " + " ".join(argv if argv is not None else sys.argv[1:])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "candidates.json").write_text(json.dumps(report, indent=1))
    lines = [f"{len(ids)} documents ({report['variant']}), {len(texts)} queries, p50 of each query's fastest of "
             f"{args.rounds} runs, load average {report['machine']['load_average'][0]:.1f}; build seconds: "
             + ", ".join(f"{k} {v:.1f}" for k, v in builds.items()), "",
             "| candidate | p50 ms | recall@10 |", "|---|---|---|"]
    lines += [f"| {name} | {r['p50_ms']:.3f} | {r['recall_at_10']:.4f} |" for name, r in rows.items()]
    (args.out / "candidates.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
