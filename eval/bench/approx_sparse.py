"""Approximate SPLADE search against exact answers computed here, Seismic and Qdrant Edge on the same vectors.

    python -m eval.bench.approx_sparse --index data/i37/s100k --vectors data/scale/100k/vectors \\
        --queries data/scale/100k --out reports/approx_sparse/100k

The exact top 10 of every query come from the vectors file itself (``splade.jsonl`` of ``hybrid encode`` or
``eval.bench.scale``), as one scipy sparse product, never from our engine. Queries are encoded once by the index's
own encoder (query encoding is excluded everywhere). Rows, one process, interleaved query by query over ``--rounds``:

* ``ours default``: ``Searcher.open(index)`` with no options, ``search(query, retrievers=["splade"])`` (the
  approximate path with the probes the build tuned), ``took`` minus encoding;
* ``ours exact``: the same request with ``exact=True`` (every row of the matrix);
* ``ours probes=P``: the default path with other probes (``--probes``), for the recall/latency curve;
* ``seismic qcut=Q hf=H``: pyseismic-lsr (``--seismic``) built from the same vectors, each of a small grid of its
  search parameters (its guideline's ranges: query_cut 5-20, heap_factor 0.7-1.0);
* ``qdrant exact``: Qdrant Edge's sparse search (exact) on the same vectors (``--qdrant``).

Recall@10 is the share of the exact top 10 each row returns; ``recall_ties`` also counts a hit whose exact score
equals the 10th (ties at the cut, which engines break differently). ``--mix`` runs the kernels only (no Searcher) on
a less clustered matrix made from the vectors (each row the maximum of two random rows at 0.6-1.0 and a third at
0.3-0.6), to check that the choice of structure is not tuned to the resampled corpus's near-copies.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from eval.bench.http_latency import percentiles

SEISMIC_GRID = [(q, h) for q in (5, 10, 20) for h in (0.8, 0.9, 0.95, 1.0)]


def load_vectors(folder: Path, name: str = "splade") -> tuple[list[str], dict[str, int], sparse.csr_matrix]:
    """Ids, vocabulary and the impact matrix (CSR, float32) of a vectors folder's sparse set."""
    import orjson

    ids: list[str] = []
    vocab: dict[str, int] = {}
    indptr, terms, weights = [0], [], []
    with (folder / f"{name}.jsonl").open("rb") as handle:
        for line in handle:
            record = orjson.loads(line)
            ids.append(record["id"])
            vector = record["vector"]
            terms.extend(vocab.setdefault(t, len(vocab)) for t in vector)
            weights.extend(vector.values())
            indptr.append(len(terms))
    matrix = sparse.csr_matrix((np.asarray(weights, dtype=np.float32), np.asarray(terms, dtype=np.int32),
                                np.asarray(indptr, dtype=np.int64)), shape=(len(ids), len(vocab)))
    return ids, vocab, matrix


def as_rows(vectors: Sequence[dict[str, int]], vocab: dict[str, int]) -> sparse.csr_matrix:
    indptr, terms, weights = [0], [], []
    for vector in vectors:
        kept = [(vocab[t], w) for t, w in vector.items() if t in vocab]
        terms += [t for t, _ in kept]
        weights += [w for _, w in kept]
        indptr.append(len(terms))
    return sparse.csr_matrix((np.asarray(weights, dtype=np.float32), np.asarray(terms, dtype=np.int32),
                              np.asarray(indptr, dtype=np.int64)), shape=(len(vectors), len(vocab)))


def exact_top(docs: sparse.csr_matrix, queries: sparse.csr_matrix, k: int = 10) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each query's top ``k`` rows (score descending, then row) and their scores, by scipy's sparse product."""
    out = []
    for start in range(0, queries.shape[0], 64):
        scores = (queries[start:start + 64] @ docs.T).toarray()
        for row in scores:
            order = np.lexsort((np.arange(len(row)), -row))[:k]
            keep = row[order] > 0
            out.append((order[keep], row[order][keep]))
    return out


def recall(found: Sequence[int], scores: Sequence[float], truth: tuple[np.ndarray, np.ndarray], k: int = 10
           ) -> tuple[float, float]:
    """(share of the exact top ``k`` found, the same with hits tied with the exact k-th score counted)."""
    rows, exact_scores = truth
    if not len(rows):
        return 1.0, 1.0
    wanted = min(k, len(rows))
    same = len(set(list(found)[:k]) & set(rows.tolist())) / wanted
    cut = exact_scores[wanted - 1]
    tied = min(wanted, sum(1 for s in list(scores)[:k] if s >= cut - 1e-3)) / wanted
    return same, tied


class _Row:
    """One comparison row: a search function (query index -> (row numbers, scores)) and what it measured."""

    def __init__(self, name: str, run: Callable[[int], tuple[list[int], list[float]]], kind: str) -> None:
        self.name, self.run, self.kind = name, run, kind
        self.times: list[float] = []
        self.recall: list[float] = []
        self.recall_ties: list[float] = []


def seismic_index(ids: list[str], vocab: dict[str, int], docs: sparse.csr_matrix, n_postings: int) -> tuple[Any, float]:
    """pyseismic-lsr built from the same vectors (its in-memory dataset; one thread, as our build is timed)."""
    import seismic

    names = np.array(list(vocab), dtype=seismic.get_seismic_string())
    dataset = seismic.SeismicDataset()
    for row, doc_id in enumerate(ids):
        a, e = docs.indptr[row], docs.indptr[row + 1]
        dataset.add_document(doc_id, names[docs.indices[a:e]], docs.data[a:e].astype(np.float32))
    started = time.perf_counter()
    index = seismic.SeismicIndex.build_from_dataset(dataset, n_postings=n_postings, centroid_fraction=0.1,
                                                    summary_energy=0.4, max_fraction=1.5, num_threads=1)
    return index, time.perf_counter() - started


def qdrant_sparse(ids: list[str], docs: sparse.csr_matrix) -> tuple[Any, Any, float]:
    """A Qdrant Edge shard holding the same impacts as one sparse vector each (exact dot products)."""
    import qdrant_edge as qe

    folder = tempfile.TemporaryDirectory(prefix="qdrant-sparse-")
    config = qe.EdgeConfig(vectors={}, sparse_vectors={"splade": qe.EdgeSparseVectorParams()},
                           optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1), max_search_threads=1)
    shard = qe.EdgeShard.create(folder.name, config)
    started = time.perf_counter()
    for start in range(0, len(ids), 1024):
        points = []
        for row in range(start, min(len(ids), start + 1024)):
            a, e = docs.indptr[row], docs.indptr[row + 1]
            points.append(qe.Point(row, {"splade": qe.SparseVector(docs.indices[a:e].tolist(),
                                                                   docs.data[a:e].tolist())}, None))
        shard.update(qe.UpdateOperation.upsert_points(points))
    shard.optimize()
    return shard, folder, time.perf_counter() - started


def index_rows(index: Path, queries: list[str], ids: list[str], probes: Sequence[int]
               ) -> tuple[list[_Row], Any, list[dict[str, int]], dict[str, Any]]:
    """Our rows through ``Searcher.open(index)`` with no options; encoding answered from a cache (as
    eval.bench.qdrant_edge does), so each timing is ``took`` minus nothing but search, ranking and hits."""
    from eval.bench.qdrant_edge import _Cached
    from indexes.storage.docstore.manifest import Manifest
    from retrieval.search.pipeline import Searcher

    searcher = Searcher.open(index)
    splade = searcher.searchers["splade"]
    splade.encode_queries = _Cached(splade.encode_queries, queries)  # type: ignore[attr-defined]
    vectors = splade.encode_queries(queries)  # type: ignore[attr-defined]
    row_of = {doc_id: i for i, doc_id in enumerate(ids)}
    matrix_search = splade.matrix  # type: ignore[attr-defined]
    default = list(matrix_search.probes)

    def ours(exact: bool, shard_probes: list[int | None] | None = None) -> Callable[[int], tuple[list[int], list[float]]]:
        def run(i: int) -> tuple[list[int], list[float]]:
            matrix_search.probes = shard_probes if shard_probes is not None else default
            hits = searcher.search(queries[i], k=10, retrievers=["splade"], exact=exact).hits
            return [row_of[h.id] for h in hits], [h.score for h in hits]
        return run

    rows = [_Row(f"ours default (probes {default[0]})", ours(False), "ours"), _Row("ours exact", ours(True), "ours")]
    rows += [_Row(f"ours probes={p}", ours(False, [p] * len(default)), "ours") for p in probes]
    entry = Manifest.read(Path(index)).retrievers["splade"]
    info = {"tuning": entry.search_tuning, "parameters": entry.parameters, "index_seconds": entry.index_seconds,
            "default_probes": default}
    return rows, searcher, vectors, info


def mixed(docs: sparse.csr_matrix, seed: int = 7) -> sparse.csr_matrix:
    """A less clustered matrix of as many rows: each the maximum of two random rows scaled 0.6-1.0 and a third
    scaled 0.3-0.6, rounded to integer impacts."""
    rng = np.random.default_rng(seed)
    n = docs.shape[0]
    picks = [docs[rng.integers(0, n, n)].multiply(rng.uniform(lo, hi, n)[:, None]).tocsr()
             for lo, hi in ((0.6, 1.0), (0.6, 1.0), (0.3, 0.6))]
    out = picks[0].maximum(picks[1]).maximum(picks[2]).tocsr()
    out.data = np.maximum(np.rint(out.data), 1).astype(np.float32)
    out.sort_indices()
    return out


def kernel_rows(docs: sparse.csr_matrix, qrows: sparse.csr_matrix, probes: Sequence[int]) -> tuple[list[_Row], dict[str, Any]]:
    """Our kernels alone (exact: the matrix's exhaustive pass; approximate: the clusters) on a matrix built here."""
    from indexes.storage.sparse import clusters
    from indexes.storage.sparse.impact_matrix import block_top

    data = docs.astype(np.uint16)
    started = time.perf_counter()
    layout = clusters.build(data.indptr, data.indices, data.data, data.shape[1])
    held = data[layout.order].tocsc()
    found = clusters.Clusters(held, layout.starts, layout.cptr, layout.cterms, layout.cweights)
    seconds = time.perf_counter() - started
    plain = data.tocsc()
    none = np.zeros(0, dtype=bool)

    def query(i: int) -> tuple[np.ndarray, np.ndarray]:
        a, e = qrows.indptr[i], qrows.indptr[i + 1]
        return qrows.indices[a:e].astype(np.int64), qrows.data[a:e].astype(np.float32)

    def ranked(rows: np.ndarray, scores: np.ndarray) -> tuple[list[int], list[float]]:
        order = np.lexsort((rows, -scores))[:10]
        return rows[order].tolist(), scores[order].tolist()

    def exact(i: int) -> tuple[list[int], list[float]]:
        return ranked(*block_top(plain, *query(i), None, 10))

    def approx(p: int) -> Callable[[int], tuple[list[int], list[float]]]:
        def run(i: int) -> tuple[list[int], list[float]]:
            positions, scores, _ = found.top(held, *query(i), none, 10, p)
            return ranked(layout.order[positions], scores)
        return run

    rows = [_Row("kernel exact", exact, "ours")] + [_Row(f"kernel probes={p}", approx(p), "ours") for p in probes]
    return rows, {"clusters": found.count, "cluster_seconds": seconds}


def main(argv: Sequence[str] | None = None) -> None:
    from indexes.indexing.tuning import read_queries

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", type=Path, help="An index with a SPLADE retriever built from --vectors.")
    parser.add_argument("--vectors", type=Path, required=True, help="The vectors folder the index was built from.")
    parser.add_argument("--queries", type=Path, required=True, help="A BEIR folder (its queries.jsonl) or file.")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--probes", default="8,16,32,64", help="Comma-separated probes for the curve.")
    parser.add_argument("--seismic", type=int, default=2000, metavar="N_POSTINGS",
                        help="pyseismic-lsr's n_postings (0: leave Seismic out).")
    parser.add_argument("--qdrant", action="store_true", help="Add Qdrant Edge's exact sparse search.")
    parser.add_argument("--mix", action="store_true", help="Kernels only, on a less clustered matrix (see above).")
    parser.add_argument("--encoder-index", type=Path, default=None,
                        help="With --mix and no --index: an index whose SPLADE encoder encodes the queries.")
    parser.add_argument("--out", type=Path, default=Path("reports/approx_sparse"))
    args = parser.parse_args(argv)
    queries_file = args.queries / "queries.jsonl" if args.queries.is_dir() else args.queries
    texts = read_queries(queries_file, args.limit)
    probes = [int(p) for p in args.probes.split(",") if p]
    started = time.perf_counter()
    ids, vocab, docs = load_vectors(args.vectors)
    print(f"{len(ids)} documents read in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    report: dict[str, Any] = {"vectors": str(args.vectors), "queries": len(texts), "rounds": args.rounds,
                              "documents": len(ids)}
    searcher = None
    if args.mix or args.index is None:
        from retrieval.search.pipeline import Searcher

        with Searcher.open(args.encoder_index or args.index, retrievers=["splade"], verify="off") as encoder_side:
            vectors = encoder_side.searchers["splade"].encode_queries(texts)  # type: ignore[attr-defined]
        docs = mixed(docs) if args.mix else docs
        qrows = as_rows(vectors, vocab)
        rows, report["ours"] = kernel_rows(docs, qrows, probes)
        report["variant"] = "mixed" if args.mix else "resampled"
    else:
        rows, searcher, vectors, report["ours"] = index_rows(args.index, texts, ids, probes)
        qrows = as_rows(vectors, vocab)
    started = time.perf_counter()
    truth = exact_top(docs, qrows)
    report["exact_scipy_seconds"] = time.perf_counter() - started
    shard = folder = None
    if args.seismic:
        import seismic

        index, seconds = seismic_index(ids, vocab, docs, args.seismic)
        report["seismic"] = {"n_postings": args.seismic, "centroid_fraction": 0.1, "summary_energy": 0.4,
                             "max_fraction": 1.5, "build_seconds": seconds, "build_threads": 1}
        print(f"seismic built in {seconds:.1f} s", file=sys.stderr, flush=True)
        string = seismic.get_seismic_string()
        names = list(vocab)
        seismic_queries = [(np.array([names[t] for t in qrows.indices[qrows.indptr[i]:qrows.indptr[i + 1]]], dtype=string),
                            qrows.data[qrows.indptr[i]:qrows.indptr[i + 1]].astype(np.float32)) for i in range(len(texts))]
        row_of = {doc_id: i for i, doc_id in enumerate(ids)}

        def seismic_row(cut: int, factor: float) -> Callable[[int], tuple[list[int], list[float]]]:
            def run(i: int) -> tuple[list[int], list[float]]:
                hits = index.search(str(i), *seismic_queries[i], k=10, query_cut=cut, heap_factor=factor)
                return [row_of[h[2]] for h in hits], [float(h[1]) for h in hits]
            return run

        rows += [_Row(f"seismic qcut={q} hf={h}", seismic_row(q, h), "seismic") for q, h in SEISMIC_GRID]
    if args.qdrant:
        import qdrant_edge as qe

        shard, folder, seconds = qdrant_sparse(ids, docs)
        report["qdrant"] = {"build_seconds": seconds, "max_search_threads": 1}

        def qdrant(i: int) -> tuple[list[int], list[float]]:
            a, e = qrows.indptr[i], qrows.indptr[i + 1]
            request = qe.QueryRequest(limit=10, query=qe.Query.Nearest(
                qe.SparseVector(qrows.indices[a:e].tolist(), qrows.data[a:e].tolist()), using="splade"))
            points = shard.query(request)
            return [int(p.id) for p in points], [float(p.score) for p in points]

        rows.append(_Row("qdrant exact", qdrant, "qdrant"))
    try:
        for row in rows:  # one untimed pass: compile, warm caches
            for i in range(len(texts)):
                row.run(i)
        for round_ in range(args.rounds):
            for i in range(len(texts)):
                for row in rows:
                    t0 = time.perf_counter()
                    found, scores = row.run(i)
                    row.times.append((time.perf_counter() - t0) * 1000.0)
                    if round_ == 0:
                        same, tied = recall(found, scores, truth[i])
                        row.recall.append(same)
                        row.recall_ties.append(tied)
    finally:
        if searcher is not None:
            searcher.close()
        if shard is not None:
            shard.close()
            folder.cleanup()  # type: ignore[union-attr]
    report["rows"] = {row.name: {"kind": row.kind, "ms": percentiles(row.times), "recall_at_10": float(np.mean(row.recall)),
                                 "recall_ties": float(np.mean(row.recall_ties))} for row in rows}
    report["summary"] = summary(report["rows"])
    report["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                         "load_average": os.getloadavg()}
    report["command"] = "python -m eval.bench.approx_sparse " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "approx_sparse.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (args.out / "approx_sparse.md").write_text(text)
    print(text)


def summary(rows: dict[str, Any], target: float = 0.98) -> dict[str, Any]:
    """The default row against Seismic's cheapest grid point at equal or higher recall, and against Qdrant."""
    default = next((r for n, r in rows.items() if n.startswith("ours default")), None)
    out: dict[str, Any] = {}
    if default is None:
        return out
    out["default_p50_ms"], out["default_recall"] = default["ms"]["p50"], default["recall_at_10"]
    peers = [r for r in rows.values() if r["kind"] == "seismic" and r["recall_at_10"] >= default["recall_at_10"]]
    if peers:
        best = min(peers, key=lambda r: r["ms"]["p50"])
        out["seismic_p50_ms_at_equal_recall"] = best["ms"]["p50"]
        out["ours_over_seismic"] = default["ms"]["p50"] / best["ms"]["p50"]
    if "qdrant exact" in rows:
        out["ours_over_qdrant"] = default["ms"]["p50"] / rows["qdrant exact"]["ms"]["p50"]
    if "ours exact" in rows:
        out["exact_p50_ms"] = rows["ours exact"]["ms"]["p50"]
    out["target_recall"] = target
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [(f"{report['documents']} documents, {report['queries']} queries x {report['rounds']} rounds, k=10, query "
              f"encoding excluded; recall against exact answers from scipy over the vectors file; load average "
              f"{report['machine']['load_average'][0]:.1f} on {report['machine']['cpus']} cpus."), "",
             "| row | p50 ms | p99 ms | recall@10 | recall@10 (ties counted) |", "|---|---|---|---|---|"]
    for name, r in report["rows"].items():
        lines.append(f"| {name} | {r['ms']['p50']:.3f} | {r['ms']['p99']:.3f} | {r['recall_at_10']:.4f} | "
                     f"{r['recall_ties']:.4f} |")
    lines += ["", "Summary: " + json.dumps(report["summary"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
