"""Impact indexing against its ceiling (issue 33): the impact writer, a minimal IndexWriter loop, Anserini's path.

    python -m eval.bench.lucene_ceiling --vectors data/scale/100k/vectors/splade.jsonl --work /tmp/ceiling \\
        --rounds 3 --out reports/bench/lucene_ceiling_100k.json [--anserini]

On one vectors file (Anserini's JSON vector lines), in one process, rounds interleaved:

* ``ceiling``: ``hybrid.lucene.Ceiling``: the same postings (id and ``contents`` fields, impacts as frequencies)
  parsed into memory first (not timed), then indexed by ``--threads`` threads into one ``IndexWriter`` set up as
  ``IndexCollection`` sets it up (default merges, no document order kept), and committed. Nothing else: no JSON,
  no Python, no matrix.
* ``writer``: the impact writer as a build runs it (:class:`indexes.storage.lucene.impacts.ImpactBuilder` fed
  the file's lines in chunks by ``SparseVectors.line_chunks``, Lucene's order kept, the impact matrix written
  unless ``--no-matrix``), from the first read to the commit; its stages as the build records them.
* ``anserini`` (with ``--anserini``, one round, on ``--anserini-docs`` documents): the former path, Anserini's
  ``IndexCollection`` over ``JsonVectorCollection`` (staged JSONL included, as the build staged it).

Prints docs/s and postings/s of each (best and median of the rounds), the writer's share of the ceiling, the
machine's load average and the process's CPU seconds per run (wall times on a shared machine say little alone),
and writes a JSON report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from indexes.storage.lucene.impacts import RAM_BUFFER_MB, ImpactBuilder, chunk_documents
from indexes.storage.vectors.files import SparseVectors
from retrieval.core.jvm import ensure_pyserini


def _measured(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    load = os.getloadavg()[0]
    cpu, started = time.process_time(), time.perf_counter()
    out = fn()
    return {**out, "wall_s": round(time.perf_counter() - started, 3), "cpu_s": round(time.process_time() - cpu, 3),
            "load_before": round(load, 2)}


def ceiling(vectors: Path, folder: Path, threads: int, doc_vectors: bool, docs: int) -> dict[str, Any]:
    """The minimal loop (its own timer: indexing and commit only)."""
    ensure_pyserini()
    from jnius import autoclass

    similarity = autoclass("io.anserini.search.similarity.ImpactSimilarity")()
    result = json.loads(autoclass("hybrid.lucene.Ceiling").run(str(vectors), str(folder), threads, RAM_BUFFER_MB,
                                                               doc_vectors, similarity, docs))
    return result


def writer(source: SparseVectors, ids: list[str], folder: Path, threads: int, doc_vectors: bool,
           matrix: bool) -> dict[str, Any]:
    work = folder.with_name(folder.name + "-work")
    builder = ImpactBuilder(folder, work, doc_vectors, threads, folder.with_name(folder.name + "-matrix") if matrix else None)
    read = 0.0
    try:
        chunks = source.line_ranges(ids, chunk_documents(len(ids), threads))
        while True:
            started = time.perf_counter()
            chunk = next(chunks, None)
            read += time.perf_counter() - started
            if chunk is None:
                break
            builder.add_file(source.path, chunk[1], chunk[0])
        summary = builder.finish()
    finally:
        builder.close()
    return {**summary, "read_s": round(read, 3)}


def anserini(source: SparseVectors, ids: list[str], folder: Path, threads: int, doc_vectors: bool) -> dict[str, Any]:
    from indexes.storage.lucene.backend import build_impact_anserini

    work = folder.with_name(folder.name + "-work")
    postings = 0

    def rows() -> Any:
        nonlocal postings
        for doc_id, vector in source.vectors(ids):
            postings += len(vector)
            yield doc_id, vector

    started = time.perf_counter()
    build_impact_anserini(rows(), work, folder, threads, len(ids), doc_vectors)
    return {"documents": len(ids), "postings": postings, "seconds": round(time.perf_counter() - started, 3)}


def _rates(runs: list[dict[str, Any]], seconds: str) -> dict[str, Any]:
    times = [r[seconds] for r in runs]
    docs, postings = runs[0]["documents"], runs[0]["postings"]
    best, median = min(times), statistics.median(times)
    return {"runs": runs, "best_s": best, "median_s": median, "docs_per_s": round(docs / best),
            "postings_per_s": round(postings / best), "median_docs_per_s": round(docs / median),
            "median_postings_per_s": round(postings / median)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=Path, required=True, help="a sparse vectors file (NAME.jsonl)")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (emptied)")
    parser.add_argument("--docs", type=int, default=0, help="the file's first N documents (0: all)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--doc-vectors", action="store_true", help="store term vectors (default off: the lean build)")
    parser.add_argument("--no-matrix", action="store_true", help="the writer without the impact matrix")
    parser.add_argument("--anserini", action="store_true", help="also time Anserini's path once")
    parser.add_argument("--anserini-docs", type=int, default=0, help="documents for Anserini's path (0: --docs)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    source = SparseVectors(args.vectors, [], partial=True)
    ids = source.ids()
    if args.docs:
        ids = ids[: args.docs]
    id_pass = time.perf_counter() - started
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    ensure_pyserini()
    results: dict[str, list[dict[str, Any]]] = {"ceiling": [], "writer": []}
    for number in range(args.rounds):
        folder = args.work / f"ceiling-{number}"
        results["ceiling"].append(_measured(lambda: ceiling(args.vectors, folder, args.threads, args.doc_vectors,
                                                            len(ids))))
        shutil.rmtree(folder)
        folder = args.work / f"writer-{number}"
        results["writer"].append(_measured(lambda: writer(source, ids, folder, args.threads, args.doc_vectors,
                                                          not args.no_matrix)))
        shutil.rmtree(args.work / f"writer-{number}")
        shutil.rmtree(args.work / f"writer-{number}-matrix", ignore_errors=True)
        shutil.rmtree(args.work / f"writer-{number}-work", ignore_errors=True)
        print(f"round {number + 1}: ceiling {results['ceiling'][-1]['seconds']:.2f} s, writer "
              f"{results['writer'][-1]['wall_s']:.2f} s (load {results['writer'][-1]['load_before']})",
              file=sys.stderr, flush=True)
    report: dict[str, Any] = {
        "command": "python -m eval.bench.lucene_ceiling " + " ".join(argv if argv is not None else sys.argv[1:]),
        "vectors": str(args.vectors), "documents": len(ids), "threads": args.threads, "doc_vectors": args.doc_vectors,
        "matrix": not args.no_matrix, "id_pass_s": round(id_pass, 3), "cpus": os.cpu_count(),
        "machine": platform.platform(), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "ceiling": _rates(results["ceiling"], "seconds"), "writer": _rates(results["writer"], "wall_s"),
    }
    report["writer_share_of_ceiling"] = round(report["ceiling"]["best_s"] / report["writer"]["best_s"], 3)
    report["writer_share_of_ceiling_median"] = round(report["ceiling"]["median_s"] / report["writer"]["median_s"], 3)
    if args.anserini:
        subset = ids[: args.anserini_docs] if args.anserini_docs else ids
        folder = args.work / "anserini"
        report["anserini"] = _rates([_measured(lambda: anserini(source, subset, folder, args.threads, args.doc_vectors))],
                                    "seconds")
        shutil.rmtree(folder)
    print(f"{'path':<10}{'best s':>9}{'median s':>10}{'docs/s':>10}{'postings/s':>14}")
    for name in ("ceiling", "writer", "anserini"):
        if name in report:
            r = report[name]
            print(f"{name:<10}{r['best_s']:>9.2f}{r['median_s']:>10.2f}{r['docs_per_s']:>10,}{r['postings_per_s']:>14,}")
    print(f"writer / ceiling: {report['writer_share_of_ceiling']:.2f} (best), "
          f"{report['writer_share_of_ceiling_median']:.2f} (median)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
