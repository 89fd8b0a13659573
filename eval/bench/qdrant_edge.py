"""Qdrant Edge (``qdrant-edge-py``, Qdrant's engine in-process) against the library ``Searcher``, same vectors.

Qdrant is fed exactly this index's vectors: every document's quantized SPLADE impacts (read back from
the Lucene impact index, so they are what Lucene scores) as a sparse vector of the same weights, so a
hit's score is the same dot product; the dense vectors from FAISS with the same distance (dot product
on unit vectors), searched exactly and through HNSW; RRF and DBSF hybrids through prefetch at the
same depth. Queries are encoded once beforehand for Qdrant; ours is the library search with the
encoding time taken out (``took`` minus the encoders' own time). Both run in one process, query by
query, interleaved, so machine drift hits both alike. Top-10 overlap checks that quality is equal.

    python -m eval.bench.qdrant_edge --index data/indexes/cranfield --queries eval/datasets/cranfield \\
        --limit 150 --out reports/qdrant
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval.bench.http_latency import percentiles
from indexes.storage.lucene.backend import document_impacts
from retrieval.core.types import ScoredDoc
from retrieval.search.fusion import FusionConfig, fuse
from retrieval.search.pipeline import Searcher

QDRANT_VERSION = "0.9.0"  # qdrant-edge-py, pinned in pyproject's bench and test extras
HNSW = {"m": 16, "ef_construct": 100, "full_scan_threshold": 10}


@dataclass(frozen=True)
class Method:
    """One comparison row: our retrievers and fusion, and the Qdrant request that should rank alike."""

    name: str
    retrievers: tuple[str, ...]
    fusion: FusionConfig | None
    qdrant: Callable[[int], Any]  # query index -> QueryRequest
    where: dict[str, Any] | None = None  # our metadata filter (Qdrant's request carries the same as a Filter)
    # A fusion row's prefetches as requests of their own (query index -> one per retriever, ``depth`` hits each):
    # Qdrant's candidate lists, which our fusion then fuses, to tell fusion from ranking differences apart.
    inputs: Callable[[int], list[Any]] | None = None
    exact: bool = False  # ours searched with the request's exact (SPLADE's whole matrix, not its clusters)


def qdrant_filter(where: dict[str, Any]) -> Any:
    """Our filter JSON as a Qdrant ``Filter``: ``term``, ``terms`` and ``range`` on top-level fields, ``and``/``or``/
    ``not`` of those (what the comparison needs; anything else is refused in one line)."""
    qe = _edge()
    (op, arg), = where.items()
    if op == "and":
        return qe.Filter(must=[qdrant_filter(w) for w in arg])
    if op == "or":
        return qe.Filter(should=[qdrant_filter(w) for w in arg])
    if op == "not":
        return qe.Filter(must_not=[qdrant_filter(arg)])
    (field, value), = arg.items()
    if op == "term":
        return qe.Filter(must=[qe.FieldCondition(field, match=qe.MatchValue(value))])
    if op == "terms":
        return qe.Filter(must=[qe.FieldCondition(field, match=qe.MatchAny(list(value)))])
    if op == "range":  # RangeFloat serves integer indexes too
        return qe.Filter(must=[qe.FieldCondition(field, range=qe.RangeFloat(**value))])
    raise SystemExit(f"--filter: operator {op!r} has no Qdrant translation here; use term, terms, range, and, or, not")


def _fields(where: dict[str, Any]) -> set[str]:
    (op, arg), = where.items()
    if op in ("and", "or"):
        return set().union(*(_fields(w) for w in arg))
    if op == "not":
        return _fields(arg)
    return set(arg)


def _edge() -> Any:
    import qdrant_edge

    return qdrant_edge


def _dense_vectors(searcher: Searcher, name: str) -> tuple[list[str], np.ndarray]:
    import faiss

    index = faiss.read_index(str(searcher.folder / name / "index.faiss"))
    docnos = faiss.vector_to_array(faiss.downcast_index(index).id_map).astype(np.int64)
    vectors = faiss.downcast_index(index).index.reconstruct_n(0, index.ntotal)
    ids = searcher.store.ids_by_docno(docnos.tolist())
    keep = [i for i, doc_id in enumerate(ids) if doc_id is not None]
    return [ids[i] for i in keep], vectors[keep]  # type: ignore[misc]


Chunk = tuple[list[str], list[dict[str, int]], np.ndarray]  # ids, their impacts, their dense rows


def _from_index(searcher: Searcher, sparse: str, dense: str, size: int = 256) -> Iterator[Chunk]:
    """The index's own vectors: impacts read back from Lucene's postings, rows from the FAISS file."""
    impacts = document_impacts(searcher.folder / sparse)
    dense_ids, dense_vectors = _dense_vectors(searcher, dense)
    ids = sorted(impacts)
    if set(dense_ids) != set(ids):
        raise RuntimeError(f"{sparse} and {dense} hold different documents")
    row = {doc_id: i for i, doc_id in enumerate(dense_ids)}
    for start in range(0, len(ids), size):
        chunk = ids[start:start + size]
        yield chunk, [impacts[d] for d in chunk], dense_vectors[[row[d] for d in chunk]]


def _from_vectors(folder: Path, sparse: str, dense: str, size: int = 1024) -> Iterator[Chunk]:
    """A ``hybrid encode`` folder the index was built from (``--vectors``), streamed: at a million documents the
    postings cannot be read back through the JNI in reasonable time, nor held as Python dicts at once."""
    rows = np.load(folder / f"{dense}.npy", mmap_mode="r")
    with (folder / f"{dense}.ids.jsonl").open() as ids_file, (folder / f"{sparse}.jsonl").open() as sparse_file:
        ids: list[str] = []
        weights: list[dict[str, int]] = []
        for at, (id_line, sparse_line) in enumerate(zip(ids_file, sparse_file)):
            record = json.loads(sparse_line)
            ids.append(json.loads(id_line))
            if record["id"] != ids[-1]:
                raise RuntimeError(f"{folder}: line {at + 1} of {sparse}.jsonl is {record['id']!r}, "
                                   f"the dense ids say {ids[-1]!r}")
            weights.append(record["vector"])
            if len(ids) == size:
                yield ids, weights, np.asarray(rows[at + 1 - size : at + 1])
                ids, weights = [], []
        if ids:
            yield ids, weights, np.asarray(rows[len(rows) - len(ids) :])


class QdrantShard:
    """A temporary Qdrant Edge shard holding this index's SPLADE and dense vectors under one point id each.

    ``vectors``: read them from the ``hybrid encode`` folder the index was built from instead of the index.
    ``hnsw_m`` 0: no HNSW graph (dense is searched exactly only; at a million points on 2 cores the graph takes long).
    """

    def __init__(self, searcher: Searcher, sparse: str = "splade", dense: str = "dense", vectors: Path | None = None,
                 hnsw_m: int = HNSW["m"], payload: Sequence[str] = ()) -> None:
        qe = _edge()
        self.vocab: dict[str, int] = {}
        self.ids: list[str] = []
        self.sparse, self.dense = sparse, dense
        self._dir = tempfile.TemporaryDirectory(prefix="qdrant-edge-")
        hnsw = {**HNSW, "m": hnsw_m}
        dimension = searcher.searchers[dense].index.dimension  # type: ignore[attr-defined]
        config = qe.EdgeConfig(
            vectors={dense: qe.EdgeVectorParams(size=int(dimension), distance=qe.Distance.Dot)},
            sparse_vectors={sparse: qe.EdgeSparseVectorParams()},
            hnsw_config=qe.HnswIndexConfig(**hnsw),
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
            max_search_threads=1,
        )
        self.shard = qe.EdgeShard.create(self._dir.name, config)
        for field in payload:
            kind = searcher.manifest.fields.get(field)
            if kind not in ("keyword", "number"):
                raise SystemExit(f"--filter field {field!r} is {kind or 'not a field of this index'}; "
                                 "use a keyword or number field")
        whole = {field: True for field in payload}  # number fields holding only integers get Qdrant's integer index
        chunks = _from_vectors(vectors, sparse, dense) if vectors else _from_index(searcher, sparse, dense)
        started = time.perf_counter()
        for ids, weights, rows in chunks:
            stored = searcher.store.get(ids) if payload else {}
            payloads = [{f: stored[d].metadata[f] for f in payload if f in stored[d].metadata} if payload else None
                        for d in ids]
            for values in payloads if payload else ():
                for field, value in values.items():
                    whole[field] = whole[field] and isinstance(value, int) and not isinstance(value, bool)
            points = [qe.Point(len(self.ids) + i, {sparse: self.sparse_vector(w), dense: r.tolist()}, payloads[i])
                      for i, (w, r) in enumerate(zip(weights, rows))]
            self.shard.update(qe.UpdateOperation.upsert_points(points))
            self.ids += ids
        for field in payload:  # indexed, as one would for filtering in Qdrant (match and range both use the index)
            kind = searcher.manifest.fields[field]
            schema = (qe.PayloadSchemaType.Keyword if kind == "keyword" else
                      qe.PayloadSchemaType.Integer if whole[field] else qe.PayloadSchemaType.Float)
            self.shard.update(qe.UpdateOperation.create_field_index(field, schema))
        self.payload_index = {f: ("keyword" if searcher.manifest.fields[f] == "keyword" else
                                  "integer" if whole[f] else "float") for f in payload}
        self.upsert_seconds = time.perf_counter() - started
        self.shard.optimize()  # builds HNSW (unless m is 0) and the immutable sparse index
        self.build_seconds = time.perf_counter() - started
        self.hnsw = hnsw_m > 0
        self.settings = {"qdrant_edge_py": QDRANT_VERSION, "dense_distance": "Dot", "hnsw": hnsw,
                         "indexing_threshold_kb": 1, "sparse": "default (inverted index, exact dot product)",
                         "max_search_threads": 1, "points": len(self.ids),
                         "fed_from": str(vectors) if vectors else "the index (Lucene postings, FAISS file)",
                         "payload_indexes": self.payload_index}

    def sparse_vector(self, weights: dict[str, int]) -> Any:
        indices = [self.vocab.setdefault(token, len(self.vocab)) for token in weights]
        return _edge().SparseVector(indices, [float(w) for w in weights.values()])

    def query(self, request: Any) -> list[tuple[str, float]]:
        return [(self.ids[int(p.id)], float(p.score)) for p in self.shard.query(request)]

    def close(self) -> None:
        self.shard.close()
        self._dir.cleanup()


def methods(shard: QdrantShard, sparse_q: Sequence[Any], dense_q: Sequence[list[float]], k: int, depth: int,
            rrf_k: int, filters: Sequence[dict[str, Any]] = (), approximate_dense: bool = False) -> list[Method]:
    """The comparison rows. Our dense rows named exact search with ``exact`` (a no-op on a Flat index); where our
    index is an ANN one (``approximate_dense``), a row of both engines' HNSW and an RRF row with ours exact join."""
    qe = _edge()
    s, d = shard.sparse, shard.dense
    exact = qe.SearchParams(exact=True)

    def nearest_sparse(i: int, limit: int) -> Any:
        return dict(limit=limit, query=qe.Query.Nearest(sparse_q[i], using=s))

    def nearest_dense(i: int, limit: int, params: Any) -> Any:
        return dict(limit=limit, query=qe.Query.Nearest(dense_q[i], using=d), params=params)

    def fused(fusion: Any) -> Callable[[int], Any]:
        return lambda i: qe.QueryRequest(limit=k, query=fusion, prefetches=[
            qe.Prefetch(**nearest_sparse(i, depth)), qe.Prefetch(**nearest_dense(i, depth, exact))])

    def inputs(i: int) -> list[Any]:
        return [qe.QueryRequest(**nearest_sparse(i, depth)), qe.QueryRequest(**nearest_dense(i, depth, exact))]

    def filtered(where: dict[str, Any]) -> list[Method]:
        """The SPLADE, exact dense and RRF rows under one filter; Qdrant filters every prefetch and the fusion."""
        f = qdrant_filter(where)
        rrf = qe.Fusion.Rrf(k=rrf_k + 1)
        label = json.dumps(where, separators=(",", ":"))
        return [
            Method(f"splade | {label}", (s,), None, lambda i: qe.QueryRequest(**nearest_sparse(i, k), filter=f), where),
            Method(f"dense (exact) | {label}", (d,), None,
                   lambda i: qe.QueryRequest(**nearest_dense(i, k, exact), filter=f), where),
            Method(f"rrf(splade, dense) | {label}", (s, d), FusionConfig(method="rrf", rrf_k=rrf_k),
                   lambda i: qe.QueryRequest(limit=k, query=rrf, filter=f, prefetches=[
                       qe.Prefetch(**nearest_sparse(i, depth), filter=f),
                       qe.Prefetch(**nearest_dense(i, depth, exact), filter=f)]), where),
        ]

    graph = qe.SearchParams(hnsw_ef=128)
    hnsw = [Method("dense (Qdrant HNSW vs our exact)", (d,), None,
                   lambda i: qe.QueryRequest(**nearest_dense(i, k, graph)), exact=True)] if shard.hnsw else []
    if shard.hnsw and approximate_dense:  # our index is HNSW or IVF too (issue 37): both engines' ANN defaults
        hnsw.append(Method("dense (HNSW both; ours tuned)", (d,), None,
                           lambda i: qe.QueryRequest(**nearest_dense(i, k, graph))))
    return [
        # Our default SPLADE search is approximate where the index has clusters (issue 37); Qdrant's sparse is exact.
        Method("splade", (s,), None, lambda i: qe.QueryRequest(**nearest_sparse(i, k))),
        Method("splade (ours exact)", (s,), None, lambda i: qe.QueryRequest(**nearest_sparse(i, k)), exact=True),
        Method("dense (exact)", (d,), None, lambda i: qe.QueryRequest(**nearest_dense(i, k, exact)), exact=True),
        *hnsw,
        # Qdrant ranks from 0 in 1/(k + rank), we from 1: its k + 1 gives our scores.
        Method("rrf(splade, dense)", (s, d), FusionConfig(method="rrf", rrf_k=rrf_k), fused(qe.Fusion.Rrf(k=rrf_k + 1)),
               inputs=inputs),
        *([Method("rrf(splade, dense) (ours exact)", (s, d), FusionConfig(method="rrf", rrf_k=rrf_k),
                  fused(qe.Fusion.Rrf(k=rrf_k + 1)), inputs=inputs, exact=True)] if approximate_dense else []),
        Method("dbsf(splade, dense)", (s, d), FusionConfig(method="weighted", normalization="dbsf"),
               fused(qe.Fusion.Dbsf()), inputs=inputs),
        *(m for where in filters for m in filtered(where)),
    ]


def _search_only_ms(searcher: Searcher, query: str, method: Method, k: int, depth: int
                    ) -> tuple[float, list[tuple[str, float]]]:
    result = searcher.search(query, k=k, retrievers=list(method.retrievers), fusion=method.fusion, depth=depth,
                             filter=method.where, exact=method.exact)
    encode = sum(ms for stage, ms in result.timings_ms.items() if stage.endswith("_encode"))
    return result.took_ms - encode, [(h.id, h.score) for h in result.hits]


def overlap_at_k(ours: list[tuple[str, float]], theirs: list[tuple[str, float]], ties: bool) -> float:
    """Share of our top k that Qdrant returns too. With ``ties``, a document of Qdrant's that we did not
    return still counts when its score equals our last hit's (to 1e-5): a tie at the cut, which the two
    engines break differently (we by id, Qdrant in no set order)."""
    if not ours:
        return 1.0
    mine = {doc_id for doc_id, _ in ours}
    same = sum(doc_id in mine for doc_id, _ in theirs)
    if ties:
        last = ours[-1][1]
        same += sum(doc_id not in mine and abs(score - last) <= 1e-5 * max(1.0, abs(last)) for doc_id, score in theirs)
    return min(1.0, same / len(ours))


class _Cached:
    """A retriever's ``encode_queries`` answered from vectors encoded once, so our timed searches spend
    nothing on encoding (``took`` minus encode is then search, id mapping and fusion alone)."""

    def __init__(self, encode: Callable[..., Any], queries: Sequence[str]) -> None:
        self._encode = encode
        self._vectors: dict[tuple[str | None, str], Any] = {}
        self(queries)

    def __call__(self, queries: Sequence[str], mode: str | None = None) -> Any:
        missing = list(dict.fromkeys(q for q in queries if (mode, q) not in self._vectors))
        if missing:  # once per query mode
            self._vectors.update({(mode, q): v for q, v in zip(missing, self._encode(missing, mode))})
        vectors = [self._vectors[(mode, q)] for q in queries]
        return np.stack(vectors) if isinstance(vectors[0], np.ndarray) else vectors


def compare(searcher: Searcher, queries: Sequence[str], k: int = 10, depth: int = 100, rounds: int = 3,
            warmup: int = 2, vectors: Path | None = None, hnsw_m: int = HNSW["m"],
            filters: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Per method: p50/p95 of ours and Qdrant's, ours / Qdrant at p50, top-k overlap, Qdrant batch q/s.

    ``warmup`` passes over all queries come first: Lucene runs interpreted until the JVM has compiled its
    search loop (a SPLADE search measured 8.6 ms in the first pass over 225 queries, 0.75 ms in the fifth).
    """
    import faiss

    qe = _edge()
    shard = QdrantShard(searcher, vectors=vectors, hnsw_m=hnsw_m,
                        payload=sorted(set().union(*(_fields(w) for w in filters))))
    print(f"Qdrant Edge shard: {len(shard.ids)} points, upserted in {shard.upsert_seconds:.1f} s, optimized by "
          f"{shard.build_seconds:.1f} s", file=sys.stderr, flush=True)
    # One thread a query on both sides: Lucene searches a query on one thread; FAISS's and Qdrant's pools,
    # spinning between queries on a 2-core machine, slowed each other's next query several-fold.
    omp_threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        splade, dense = searcher.searchers[shard.sparse], searcher.searchers[shard.dense]
        for retriever in (splade, dense):
            retriever.encode_queries = _Cached(retriever.encode_queries, queries)  # type: ignore[attr-defined]
        sparse_q = [shard.sparse_vector(v) for v in splade.encode_queries(list(queries))]  # type: ignore[attr-defined]
        dense_q = [v.tolist() for v in np.asarray(dense.encode_queries(list(queries)))]  # type: ignore[attr-defined]
        ann = bool(getattr(getattr(dense, "index", None), "approximate", False))  # our dense index is HNSW/IVF
        rows = methods(shard, sparse_q, dense_q, k, depth, searcher.options.rrf_k, filters, ann)
        ours: dict[str, list[float]] = {m.name: [] for m in rows}
        theirs: dict[str, list[float]] = {m.name: [] for m in rows}
        overlap: dict[str, list[float]] = {m.name: [] for m in rows}
        overlap_ties: dict[str, list[float]] = {m.name: [] for m in rows}
        same_inputs: dict[str, list[float]] = {m.name: [] for m in rows if m.inputs is not None}
        score_gap: dict[str, float] = {m.name: 0.0 for m in rows}
        for _ in range(warmup):
            for i, query in enumerate(queries):
                for m in rows:
                    _search_only_ms(searcher, query, m, k, depth)
                    shard.query(m.qdrant(i))
        for round_ in range(rounds):
            for i, query in enumerate(queries):
                for m in rows:
                    ms, our_hits = _search_only_ms(searcher, query, m, k, depth)
                    request = m.qdrant(i)
                    started = time.perf_counter()
                    hits = shard.query(request)
                    theirs[m.name].append((time.perf_counter() - started) * 1000.0)
                    ours[m.name].append(ms)
                    if round_ == 0:
                        overlap[m.name].append(overlap_at_k(our_hits, hits, ties=False))
                        overlap_ties[m.name].append(overlap_at_k(our_hits, hits, ties=True))
                        if m.fusion is None and m.name != "dense (Qdrant HNSW vs our exact)":
                            score_gap[m.name] = max(score_gap[m.name], _score_gap(searcher, query, m, k, hits))
                        if m.inputs is not None:
                            same_inputs[m.name].append(_fusing_their_inputs(shard, m, i, k, hits))
        report: dict[str, Any] = {}
        for m in rows:
            batch = qe.QueryBatchRequest([m.qdrant(i) for i in range(len(queries))])
            started = time.perf_counter()
            shard.shard.query_batch(batch)
            qdrant_batch_qps = len(queries) / (time.perf_counter() - started)
            ours_batch_qps = _batch_qps(searcher, queries, m, k, depth)
            o, t = percentiles(ours[m.name]), percentiles(theirs[m.name])
            report[m.name] = {"ours_ms": o, "qdrant_ms": t, "ours_over_qdrant_p50": o["p50"] / t["p50"],
                              "overlap_at_k": float(np.mean(overlap[m.name])),
                              "overlap_at_k_ties": float(np.mean(overlap_ties[m.name])), "qdrant_batch_qps": qdrant_batch_qps,
                              "ours_batch_qps": ours_batch_qps, "ours_over_qdrant_batch_qps": ours_batch_qps / qdrant_batch_qps}
            if m.name in score_gap and m.fusion is None and "HNSW" not in m.name:
                report[m.name]["max_score_gap_top_k"] = score_gap[m.name]
            if m.name in same_inputs:
                report[m.name]["overlap_fusing_qdrant_inputs"] = float(np.mean(same_inputs[m.name]))
        return {"settings": shard.settings, "qdrant_build_seconds": shard.build_seconds,
                "qdrant_upsert_seconds": shard.upsert_seconds, "k": k, "depth": depth,
                "queries": len(queries), "rounds": rounds, "warmup": warmup, "methods": report}
    finally:
        for name in (shard.sparse, shard.dense):
            vars(searcher.searchers[name]).pop("encode_queries", None)  # the class's own again
        faiss.omp_set_num_threads(omp_threads)
        shard.close()


def _batch_qps(searcher: Searcher, queries: Sequence[str], method: Method, k: int, depth: int) -> float:
    """Our batch search (``Searcher.batch_search``, all queries in one call, as ``POST .../search/batch`` runs
    it, on the searcher's threads) against ``query_batch``: queries per second, encoding excluded."""
    started = time.perf_counter()
    results = searcher.batch_search(list(queries), k=k, retrievers=list(method.retrievers), fusion=method.fusion,
                                    depth=depth, filter=method.where, exact=method.exact)
    seconds = time.perf_counter() - started
    encode = sum(ms for r in results for stage, ms in r.timings_ms.items() if stage.endswith("_encode")) / 1000.0
    return len(queries) / max(seconds - encode, 1e-9)


def _fusing_their_inputs(shard: QdrantShard, method: Method, i: int, k: int, hits: list[tuple[str, float]]) -> float:
    """Top-k overlap of Qdrant's fused hits with our fusion (:func:`fuse`) of Qdrant's own candidate lists: 1.0 says
    the fusions agree, so a lower overlap of the row comes from the candidate lists (documents tied in score that
    the two engines put in different places, which moves their RRF shares), not from fusion."""
    lists = [shard.query(request) for request in method.inputs(i)]  # type: ignore[misc]
    runs = {name: [ScoredDoc(doc_id, score) for doc_id, score in hits_] for name, hits_ in zip(method.retrievers, lists)}
    ours = fuse(runs, method.fusion, k)  # type: ignore[arg-type]
    return overlap_at_k([(d.doc_id, d.score) for d in ours], hits, ties=True)


def _score_gap(searcher: Searcher, query: str, method: Method, k: int, hits: list[tuple[str, float]]) -> float:
    """Largest |our score - Qdrant's| over documents both return (the dot products should be equal)."""
    ours = {h.id: h.score for h in searcher.search(query, k=k, retrievers=list(method.retrievers),
                                                   filter=method.where, exact=method.exact).hits}
    gaps = [abs(ours[doc_id] - score) for doc_id, score in hits if doc_id in ours]
    return max(gaps, default=0.0)


def markdown(report: dict[str, Any]) -> str:
    lines = [f"k={report['k']}, depth {report['depth']}, {report['queries']} queries x {report['rounds']} rounds after "
             f"{report.get('warmup', 0)} untimed passes, "
             f"interleaved in one process; query encoding excluded on both sides.", "",
             f"Qdrant Edge settings: {json.dumps(report['settings'])}", "",
             "| search | Qdrant Edge p50 | p95 | ours p50 | p95 | ours / Qdrant (p50) | top-k overlap (ties at the cut counted) "
             "| batch q/s: Qdrant `query_batch` / ours `batch_search` (ours / Qdrant) |", "|---|---|---|---|---|---|---|---|"]
    for name, r in report["methods"].items():
        lines.append(f"| {name} | {r['qdrant_ms']['p50']:.3f} ms | {r['qdrant_ms']['p95']:.3f} | {r['ours_ms']['p50']:.3f} ms | "
                     f"{r['ours_ms']['p95']:.3f} | {r['ours_over_qdrant_p50']:.2f}x | {r['overlap_at_k']:.3f} ({r['overlap_at_k_ties']:.3f}) | "
                     f"{r['qdrant_batch_qps']:.0f} / {r.get('ours_batch_qps', float('nan')):.0f} "
                     f"({r.get('ours_over_qdrant_batch_qps', float('nan')):.2f}x) |")
    same = {name: r["overlap_fusing_qdrant_inputs"] for name, r in report["methods"].items()
            if "overlap_fusing_qdrant_inputs" in r}
    if same:
        lines += ["", "Our fusion of Qdrant's own candidate lists against Qdrant's fused hits (top-k overlap, ties at the "
                  "cut counted): " + ", ".join(f"{name} {value:.3f}" for name, value in same.items()) + ". Where this "
                  "is 1.000 and the row's overlap is lower, the fusions agree and the candidate lists differ: documents "
                  "tied in score that the two engines rank in different places."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    from eval.beir_data import load_dataset

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", type=Path, required=True, help="An index folder with splade and dense retrievers.")
    parser.add_argument("--queries", type=Path, required=True, help="A BEIR dataset folder (its queries are used).")
    parser.add_argument("--limit", type=int, default=150)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2, help="Untimed passes over all queries first (JIT).")
    parser.add_argument("--vectors", type=Path, default=None,
                        help="Feed Qdrant from the 'hybrid encode' folder the index was built from (large indexes).")
    parser.add_argument("--splade-search", default="auto", choices=["auto", "lucene", "matrix"],
                        help="Our SPLADE engine (settings' splade_search): in-memory matrix or Lucene.")
    parser.add_argument("--filter", dest="filters", action="append", type=json.loads, default=[],
                        help="A metadata filter (our JSON: term, terms, range, and, or, not), repeatable: SPLADE, dense "
                             "and RRF rows under it, Qdrant given the fields as indexed payload.")
    parser.add_argument("--hnsw-m", type=int, default=HNSW["m"], help="Qdrant's HNSW m; 0 builds no graph.")
    parser.add_argument("--out", type=Path, default=Path("reports/qdrant"))
    args = parser.parse_args(argv)
    queries = list(load_dataset(args.queries).queries.values())[: args.limit]
    searcher = Searcher.open(args.index, retrievers=["splade", "dense"], verify="off", splade_search=args.splade_search)
    try:
        report = compare(searcher, queries, k=args.k, depth=args.depth, rounds=args.rounds, warmup=args.warmup,
                         vectors=args.vectors, hnsw_m=args.hnsw_m, filters=args.filters)
    finally:
        searcher.close()
    matrix = searcher.searchers["splade"].matrix  # type: ignore[attr-defined]
    report["splade_engine"] = "matrix" if matrix is not None else "lucene"
    report["splade_probes"] = matrix.probes if matrix is not None else None  # None: exact (no clusters)
    report["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                         "load_average": os.getloadavg()}
    report["command"] = "python -m eval.bench.qdrant_edge " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "qdrant_edge.json").write_text(json.dumps(report, indent=1))
    text = f"# Qdrant Edge vs the library Searcher\n\nCommand: `{report['command']}`\n\n" + markdown(report)
    (args.out / "qdrant_edge.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
