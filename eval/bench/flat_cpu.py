"""Exact dense search on the CPU: FAISS's flat kernel against ours (indexes/storage/faiss/flat_kernel.py), one thread each.

    python -m eval.bench.flat_cpu --docs 1398,100000,1000000 --out reports/bench/flat_cpu.json

Random unit vectors of ``--dim`` dimensions, both engines over the same FAISS file (``FaissIndex(flat="faiss")``
and ``FaissIndex(flat="numba")``: ours reads FAISS's own rows), k=10: p50 of single queries, batch q/s, the
top-k overlap with FAISS, the largest score difference, and a filtered search keeping 1% and 10% of the rows (FAISS
through its selector, ours reading only the matches). Prints a table and writes a JSON report.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _p50_ms(fn: Any, queries: np.ndarray) -> float:
    fn(queries[:1])
    times = []
    for q in queries:
        started = time.perf_counter()
        fn(q[None])
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def measure(docs: int, dim: int, k: int, queries: int, batch: int, seed: int = 0) -> dict[str, Any]:
    import faiss

    from indexes.storage.faiss import backend as faiss_backend

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(seed)
    vectors, q = _unit(rng, docs, dim), _unit(rng, max(queries, batch), dim)
    with tempfile.TemporaryDirectory() as tmp:
        faiss_backend.save(faiss_backend.build(vectors, "Flat"), Path(tmp))
        del vectors
        theirs = faiss_backend.FaissIndex(Path(tmp), flat="faiss")
        ours = faiss_backend.FaissIndex(Path(tmp), flat="numba")
        out: dict[str, Any] = {"docs": docs, "dim": dim, "k": k, "queries": queries, "batch": batch}
        single = q[:queries]
        for name, index in (("faiss", theirs), ("ours", ours)):
            out[f"{name}_p50_ms"] = _p50_ms(lambda x, index=index: index.search(x, k), single)
            started = time.perf_counter()
            index.search(q[:batch], k)
            out[f"{name}_batch_qps"] = batch / (time.perf_counter() - started)
            for share in (0.1, 0.01):
                allowed = np.random.default_rng(1).random(docs) < share
                out[f"{name}_filter_{share:g}_p50_ms"] = _p50_ms(
                    lambda x, index=index, allowed=allowed: index.search_allowed(x, k, allowed), single[:50])
        want_scores, want = theirs.search(single, k)
        got_scores, got = ours.search(single, k)
        out["overlap_at_k"] = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got.tolist(), want.tolist())]))
        out["max_score_difference"] = float(np.abs(got_scores - want_scores).max())
        out["ours_over_faiss_p50"] = out["ours_p50_ms"] / out["faiss_p50_ms"]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", default="1398,100000,1000000")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rows = []
    print("| docs | FAISS p50 | ours p50 | ours / FAISS | batch q/s FAISS / ours | filter 10%: FAISS / ours | "
          "filter 1%: FAISS / ours | overlap | max score diff |\n|---|---|---|---|---|---|---|---|---|")
    for docs in (int(d) for d in args.docs.split(",")):
        r = measure(docs, args.dim, args.k, args.queries, args.batch)
        rows.append(r)
        print(f"| {docs:,} | {r['faiss_p50_ms']:.3f} ms | {r['ours_p50_ms']:.3f} ms | {r['ours_over_faiss_p50']:.2f}x | "
              f"{r['faiss_batch_qps']:,.0f} / {r['ours_batch_qps']:,.0f} | {r['faiss_filter_0.1_p50_ms']:.3f} / "
              f"{r['ours_filter_0.1_p50_ms']:.3f} ms | {r['faiss_filter_0.01_p50_ms']:.3f} / "
              f"{r['ours_filter_0.01_p50_ms']:.3f} ms | {r['overlap_at_k']:.3f} | {r['max_score_difference']:.1e} |",
              flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(["python -m eval.bench.flat_cpu", *sys.argv[1:]]),
                                    "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
