"""Dense retrieval on FAISS: sentence-transformers vectors, L2-normalized, inner product (= cosine).

Vector ids are docnos. Live writes append; deleted versions stay as tombstones that a view's
``bound``/``bitmap`` hides until a checkpoint compacts them away. An ANN index (HNSW, IVF) searches with the
efSearch/nprobe its build tuned to reach ``tune_recall_dense`` against exact search (``search_tuning`` in the
manifest); ``exact`` scans every stored vector instead.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexes.kinds.base import (
    MODEL_QUERY_MODES,
    BuildContext,
    Component,
    KindError,
    RetrieverKind,
    RetrieverRuns,
    RetrieverSearcher,
    TuningQueries,
    TuningResult,
    ViewState,
    WriteBatch,
    build_chunk,
    checked_model,
    elapsed_ms,
)
from indexes.storage.docstore.manifest import Manifest, RetrieverManifest, folder_size
from indexes.storage.docstore.store import DocStore
from indexes.storage.faiss import backend as faiss_backend
from indexes.storage.faiss import tuning as faiss_tuning
from indexes.storage.faiss.backend import FaissIndex
from indexes.storage.vectors.files import DenseVectors, DenseWriter, VectorSet
from retrieval.core.filters import Filter
from retrieval.core.options import BuildOptions, OpenOptions
from retrieval.core.runs import Run
from retrieval.core.types import Encoded, PrfConfig, RetrieverSpec, ScoredDoc
from retrieval.encoders.cache import shared_encoder
from retrieval.encoders.dense import DenseEncoder
from retrieval.encoders.models import ResolvedModel

log = logging.getLogger("hybrid.live")


def encode_vectors(vectors: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vectors, dtype="<f4").tobytes()).decode("ascii")


def decode_vectors(text: str, dimension: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(-1, dimension)


def query_vectors(encoder: DenseEncoder, queries: Sequence[str], mode: str | None, batch_size: int,
                  onnx_cache: Path | None) -> np.ndarray:
    return encoder.encode_queries(queries, batch_size=batch_size, runtime=mode or "torch", cache=onnx_cache)


class DenseSearcher:
    """``bound`` and ``bitmap``: the docnos a point-in-time view of a live index may return."""

    def __init__(self, name: str, index: FaissIndex, encoder: DenseEncoder, store: DocStore, batch_size: int,
                 view: ViewState = ViewState(), onnx_cache: Path | None = None, exact: bool = False) -> None:
        if index.dimension != encoder.dimension:
            raise ValueError(f"FAISS index {name!r} has dimension {index.dimension}, the model {encoder.dimension}")
        self.name = name
        self.encoder = encoder
        self.index = index
        self._store = store
        self._batch_size = batch_size
        self._view = view
        self._onnx_cache = onnx_cache
        self.exact = exact  # every search exact (the 'exact' setting), whatever a request says

    def encode_queries(self, queries: Sequence[str], mode: str | None = None) -> np.ndarray:
        return query_vectors(self.encoder, queries, mode, self._batch_size, self._onnx_cache)

    def given_vectors(self, given: Sequence[Any]) -> np.ndarray:
        """Client vectors, checked against the index's dimension and scaled to unit length (scores stay cosines);
        :class:`Encoded` ones (this kind's own encoding, done elsewhere) as they are."""
        if isinstance(given, Encoded):
            return np.asarray(given[0], dtype=np.float32)
        try:
            vectors = np.asarray([np.asarray(v, dtype=np.float32) for v in given], dtype=np.float32)
        except (TypeError, ValueError):
            raise KindError(f"query_vector for {self.name!r} must be a list of numbers") from None
        if vectors.ndim != 2 or vectors.shape[1] != self.index.dimension:
            width = vectors.shape[-1] if vectors.ndim >= 1 and vectors.size else 0
            raise KindError(f"query_vector for {self.name!r} has {width} dimensions; the index has {self.index.dimension}")
        if not np.isfinite(vectors).all():
            raise KindError(f"query_vector for {self.name!r} holds a NaN or infinite value")
        norms = np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
        if (norms == 0).any():
            raise KindError(f"query_vector for {self.name!r} is all zeros")
        if not np.isfinite(norms).all():
            raise KindError(f"query_vector for {self.name!r} is too large to scale to unit length")
        return np.ascontiguousarray(vectors / norms, dtype=np.float32)

    def search(self, queries: Sequence[str], depth: int, threads: int, prf: PrfConfig | None = None,
               mode: str | None = None, given: Sequence[Any] | None = None, where: Filter | None = None,
               exact: bool = False) -> RetrieverRuns:
        started = time.perf_counter()
        vectors = self.given_vectors(given) if given is not None else self.encode_queries(queries, mode)
        encode_ms = elapsed_ms(started)
        started = time.perf_counter()
        allowed = self._allowed(where) if where is not None else None
        if prf is not None:
            vectors = self._feedback(vectors, prf, allowed, exact)
        return RetrieverRuns(self.runs(vectors, depth, allowed, exact), encode_ms, elapsed_ms(started))

    def runs(self, vectors: np.ndarray, k: int, allowed: np.ndarray | None, exact: bool = False) -> list[Run]:
        """Each query's top ``k`` as a :class:`Run` of this view's document store (FAISS's order); ``exact``: every
        stored vector scored, not the ANN index's candidates."""
        scores, rows = self._search(vectors, k, allowed, exact or self.exact)
        out = []
        for values, docnos in zip(scores, rows):
            docnos = docnos.astype(np.int64, copy=False)
            ids, listed = self._store.ids_by_docno(docnos.tolist()), values.tolist()
            if None in ids:  # FAISS's -1 padding past the hits, or a docno the store never gave an id
                kept = np.array([i is not None for i in ids], dtype=bool)
                docnos, listed = docnos[kept], [v for v, i in zip(listed, ids) if i is not None]
                ids = [i for i in ids if i is not None]
            out.append(Run(docnos, ids, listed, self._store))  # type: ignore[arg-type]
        return out

    def hits(self, vectors: np.ndarray, k: int, allowed: np.ndarray | None, exact: bool = False
             ) -> list[list[tuple[float, str, int]]]:
        """Each query's top ``k`` as (score, id, docno), among ``allowed`` docnos where given (:meth:`runs`, read as
        triples: PRF and the sharded merge need the docnos beside the ids)."""
        return [list(zip(run.scores, run.ids, run.docnos.tolist())) for run in self.runs(vectors, k, allowed, exact)]

    def _allowed(self, where: Filter) -> np.ndarray:
        """The docnos this view holds that the filter selects, one bool each (the document store answers)."""
        mask = self._store.filter_mask(where)
        if self._view.bound is not None:
            mask[self._view.bound :] = False
        if self._view.bitmap is not None:
            bits = np.unpackbits(self._view.bitmap, bitorder="little")[: len(mask)].astype(bool)
            mask[len(bits) :] = False
            mask[: len(bits)] &= bits
        return mask

    def _search(self, vectors: np.ndarray, k: int, allowed: np.ndarray | None, exact: bool
                ) -> tuple[np.ndarray, np.ndarray]:
        if allowed is not None:
            return self.index.search_allowed(vectors, k, allowed, exact=exact)
        return self.index.search(vectors, k, self._view.bound, self._view.bitmap, exact=exact)

    def _feedback(self, vectors: np.ndarray, prf: PrfConfig, allowed: np.ndarray | None, exact: bool = False
                  ) -> np.ndarray:
        """Vector PRF from this index's own top hits (see :func:`moved_query`)."""
        top = self.hits(vectors, int(prf.fb_docs or 1), allowed, exact)
        return moved_query(vectors, [self.index.reconstruct(np.asarray([d for _, _, d in run], np.int64)) for run in top],
                           prf)

    def close(self) -> None:
        pass


def moved_query(vectors: np.ndarray, stored: Sequence[np.ndarray], prf: PrfConfig) -> np.ndarray:
    """Vector PRF (Li et al., 2021, as in Pyserini): each query moved towards its top hits' stored vectors.

    ``average``: mean of the query and the hits' vectors. ``rocchio``: ``alpha * q + beta * mean(hits)``. The hits'
    vectors come back from FAISS (``reconstruct``), never re-encoded; the result is L2-normalized again so
    scores stay cosines.
    """
    moved = []
    for vector, hits in zip(vectors, stored):
        count = len(hits)
        total = hits.sum(axis=0) if count else np.zeros_like(vector)  # float32 sums, divided in float64
        if prf.method == "average":
            moved.append((vector + total).astype(np.float64) / (1 + count))
        else:
            moved.append(float(prf.alpha) * vector + float(prf.beta) * (total.astype(np.float64) / max(count, 1)))
    out = np.asarray(moved, dtype=np.float64)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.asarray(out / np.where(norms > 0, norms, 1.0), dtype=np.float32)


class ShardedDenseSearcher:
    """Dense search over the shards of a sharded index: the query is encoded once, each shard's FAISS index is
    searched with it, and the hits are merged by score (cosines do not depend on other documents, so the
    merged list is an unsharded index's). PRF takes its feedback documents from the merged top hits."""

    def __init__(self, shards: Sequence[DenseSearcher]) -> None:
        self.shards = list(shards)
        self.name = self.shards[0].name

    def search(self, queries: Sequence[str], depth: int, threads: int, prf: PrfConfig | None = None,
               mode: str | None = None, given: Sequence[Any] | None = None, where: Filter | None = None,
               exact: bool = False) -> RetrieverRuns:
        first = self.shards[0]
        started = time.perf_counter()
        vectors = first.given_vectors(given) if given is not None else first.encode_queries(queries, mode)
        encode_ms = elapsed_ms(started)
        started = time.perf_counter()
        allowed = [s._allowed(where) if where is not None else None for s in self.shards]
        if prf is not None:
            top = self._hits(vectors, int(prf.fb_docs or 1), allowed, exact)
            stored = [self._stored(run) for run in top]
            vectors = moved_query(vectors, stored, prf)
        runs = [[ScoredDoc(doc_id, score) for score, doc_id, _, _ in run]
                for run in self._hits(vectors, depth, allowed, exact)]
        return RetrieverRuns(runs, encode_ms, elapsed_ms(started))

    def _stored(self, run: Sequence[tuple[float, str, int, int]]) -> np.ndarray:
        """The stored vectors of one query's hits, in hit order: one ``reconstruct`` per shard they come from."""
        out = np.zeros((len(run), self.shards[0].index.dimension), np.float32)
        by_shard: dict[int, list[int]] = {}
        for position, (_, _, shard, _) in enumerate(run):
            by_shard.setdefault(shard, []).append(position)
        for shard, positions in by_shard.items():
            out[positions] = self.shards[shard].index.reconstruct(np.asarray([run[p][3] for p in positions], np.int64))
        return out

    def _hits(self, vectors: np.ndarray, k: int, allowed: Sequence[np.ndarray | None], exact: bool = False
              ) -> list[list[tuple[float, str, int, int]]]:
        """Each query's top ``k`` over every shard: (score, id, shard, docno), score descending, then id."""
        per_shard = [s.hits(vectors, k, a, exact) for s, a in zip(self.shards, allowed)]
        out = []
        for q in range(len(vectors)):
            merged = [(score, doc_id, i, docno) for i, hits in enumerate(per_shard) for score, doc_id, docno in hits[q]]
            merged.sort(key=lambda h: (-h[0], h[1]))
            out.append(merged[:k])
        return out

    def close(self) -> None:
        for shard in self.shards:
            shard.close()


class DenseComponent(Component):
    def __init__(self, index_folder: Path, name: str, entry: RetrieverManifest, options: OpenOptions) -> None:
        super().__init__(index_folder, name, entry, options.device)
        tuned = (entry.search_tuning or {}).get("parameters", {})
        self.faiss = FaissIndex(self.folder, device=options.device, flat=options.dense_flat_search,
                                flat_dtype=options.dense_flat_dtype,
                                ef_search=options.dense_ef_search or tuned.get("ef_search"),
                                nprobe=options.dense_nprobe or tuned.get("nprobe"))
        self.exact = options.exact

    def searcher(self, encoder: Any, store: DocStore, view: ViewState, batch_size: int) -> RetrieverSearcher:
        return DenseSearcher(self.name, self.faiss, encoder, store, batch_size, view, self.onnx_cache, self.exact)

    @classmethod
    def merged_searcher(cls, components: Sequence[Component], encoder: Any, stores: Sequence[DocStore],
                        views: Sequence[ViewState], batch_size: int) -> RetrieverSearcher:
        shards = [c.searcher(encoder, s, v, batch_size) for c, s, v in zip(components, stores, views)]
        return ShardedDenseSearcher(shards)  # type: ignore[arg-type]

    def apply(self, batch: WriteBatch) -> None:
        """Appends only vectors it does not hold yet (docnos above its largest): a replayed write is a no-op."""
        if not batch.docs:
            return  # deleted vectors stay as tombstones until compact()
        vectors = decode_vectors(batch.payload, self.faiss.dimension)
        docnos = np.asarray(batch.added, dtype=np.int64)
        fresh = docnos > self.faiss.max_docno
        self.faiss.add(vectors[fresh], docnos[fresh])

    def compact(self, dead: np.ndarray, threshold: float) -> bool:
        if not len(dead) or len(dead) < threshold * max(self.faiss.ntotal, 1):
            return False
        if not self.faiss.compact(dead):
            log.warning("retriever %s: this FAISS type can neither remove vectors nor be rebuilt from them; "
                        "%d deleted versions stay as tombstones (filtered at search time)", self.name, len(dead))
            return False
        return True

    def commit(self, seq: int) -> list[str]:
        self.faiss.save(self.folder)
        return [f"{self.name}/{faiss_backend.FILE}"]


class DenseKind(RetrieverKind):
    name = "dense"
    model_option = "dense_model"
    query_modes = MODEL_QUERY_MODES
    vector_input = "dense"
    tuning_target = "tune_recall_dense"
    # Pyserini's dense PRF settings (Li et al., 2021): Average over 3 hits; Rocchio over 5 with 0.4/0.6.
    prf_methods = {
        "average": {"fb_docs": 3},
        "rocchio": {"fb_docs": 5, "alpha": 0.4, "beta": 0.6},
    }

    def parameters(self, options: BuildOptions) -> dict[str, Any]:
        return {"factory": options.faiss_factory, "metric": "inner_product", "normalized": True}

    def resolve(self, spec: RetrieverSpec, options: BuildOptions) -> ResolvedModel | None:
        faiss_backend.require_faiss()  # fail before any encoding if FAISS is missing

        return super().resolve(spec, options)

    def load_encoder(self, manifest: Manifest, name: str, device: str, role: str = "query") -> DenseEncoder:
        return shared_encoder(DenseEncoder, checked_model(manifest, name), device, role)

    def encode_queries(self, encoder: Any, entry: RetrieverManifest, queries: Sequence[str], mode: str | None,
                       batch_size: int, onnx_cache: Path) -> Encoded:
        return Encoded([query_vectors(encoder, queries, mode, batch_size, onnx_cache)])

    def encode(self, encoder: Any, entry: RetrieverManifest, texts: Sequence[str], batch_size: int) -> str:
        return encode_vectors(encoder.encode_documents(texts, batch_size=batch_size))

    def _encoded(self, ctx: BuildContext, encoder: DenseEncoder) -> Iterator[tuple[list[str], np.ndarray]]:
        """(ids, vectors) per chunk of the store, encoded as a build encodes them (GPU pipeline on CUDA)."""
        name = ctx.spec.name
        chunk = build_chunk(encoder, ctx.options.batch_size)
        batches: list[list[str]] = []

        def texts() -> Iterator[list[str]]:
            for batch in ctx.store.iter_batches(chunk):
                batches.append([d.id for d in batch])
                yield [d.contents for d in batch]

        with ctx.stage.bar(len(ctx.store), f"{name} encode") as bar:
            for vectors in encoder.encode_documents_stream(texts(), batch_size=ctx.options.batch_size):
                ctx.stage(f"{name}-encode")
                bar.update(len(vectors))
                yield batches.pop(0), vectors

    def build(self, ctx: BuildContext) -> RetrieverManifest:
        """Vectors go to FAISS chunk by chunk as they are read or encoded (``faiss_backend.IndexBuilder``: a flat
        index holds each vector once and has nothing left to add at the end; trained types still see them all)."""
        assert ctx.model is not None
        o, name = ctx.options, ctx.spec.name
        started = time.perf_counter()
        if ctx.vector_set is not None:
            dimension = int(ctx.vector_set.parameters["dimension"])
            faiss_backend.check_factory(o.faiss_factory, dimension, len(ctx.store))
            builder = faiss_backend.IndexBuilder(o.faiss_factory, dimension, o.device)
            ids = ctx.store.live_ids()
            with ctx.stage.bar(len(ids), f"{name} read vectors") as bar:
                for start in range(0, len(ids), 65536):
                    rows = ctx.vectors.rows(ids[start : start + 65536])
                    builder.add(rows)
                    bar.update(len(rows))
        else:
            encoder = self.document_encoder(ctx.model, o)
            dimension = encoder.dimension
            faiss_backend.check_factory(o.faiss_factory, dimension, len(ctx.store))
            builder = faiss_backend.IndexBuilder(o.faiss_factory, dimension, o.device)
            try:
                for _, vectors in self._encoded(ctx, encoder):
                    builder.add(vectors)
            finally:
                encoder.close()
        index = builder.finish()
        ctx.stage(f"{name}-faiss-built")
        encode_seconds = 0.0 if ctx.vector_set is not None else time.perf_counter() - started - builder.seconds
        started = time.perf_counter()
        faiss_backend.save(index, ctx.out)
        ctx.stage(f"{name}-faiss-written")
        index_seconds = builder.seconds + time.perf_counter() - started
        return RetrieverManifest(name, ctx.model.model_id, ctx.model.weights_sha256,
                                 {**self.parameters(o), "dimension": dimension},
                                 round(encode_seconds + index_seconds, 3), round(encode_seconds, 3),
                                 round(index_seconds, 3), folder_size(ctx.out), kind=self.name)

    def document_encoder(self, model: ResolvedModel | None, options: BuildOptions) -> DenseEncoder:
        assert model is not None
        return DenseEncoder(model, device=options.device)

    def export(self, ctx: BuildContext, out: Path) -> VectorSet:
        assert ctx.model is not None
        encoder = ctx.encoder or self.document_encoder(ctx.model, ctx.options)
        writer = DenseWriter(out / f"{ctx.spec.name}.npy", len(ctx.store), encoder.dimension)
        try:
            for ids, vectors in self._encoded(ctx, encoder):
                writer.write(ids, vectors)
        finally:
            writer.close()
            if ctx.encoder is None:
                encoder.close()
        parameters = {"metric": "inner_product", "normalized": True, "dimension": encoder.dimension}
        return VectorSet(ctx.spec.name, self.name, ctx.model.model_id, ctx.model.weights_sha256, parameters,
                         writer.count, [writer.path.name, writer.path.with_suffix(".ids.jsonl").name])

    def read_vectors(self, folder: Path, vector_set: VectorSet, ids: Sequence[str], partial: bool = False
                     ) -> DenseVectors:
        return DenseVectors(folder / vector_set.files[0], ids, int(vector_set.parameters["dimension"]), partial)

    def create_empty(self, out: Path, spec: RetrieverSpec, model: ResolvedModel | None,
                     options: BuildOptions) -> RetrieverManifest:
        assert model is not None
        dimension = shared_encoder(DenseEncoder, model, options.device).dimension
        faiss_backend.save(faiss_backend.empty(options.faiss_factory, dimension), out)
        return RetrieverManifest(spec.name, model.model_id, model.weights_sha256,
                                 {**self.parameters(options), "dimension": dimension}, 0.0, 0.0, 0.0, folder_size(out),
                                 kind=self.name)

    def open(self, index_folder: Path, name: str, entry: RetrieverManifest, options: OpenOptions) -> Component:
        return DenseComponent(index_folder, name, entry, options)

    def tune(self, component: Component, queries: TuningQueries, target: float) -> TuningResult | None:
        """efSearch (HNSW) or nprobe (IVF) reaching ``target`` recall@10 against an exact scan of the stored vectors
        (:mod:`indexes.storage.faiss.tuning`), on the given query texts (encoded as searches encode them by default)
        or on sampled documents' stored vectors; None for a flat index (exact already)."""
        index = component.faiss if isinstance(component, DenseComponent) else None
        if index is None or not index.approximate:
            return None
        started = time.perf_counter()
        if queries.texts is not None:
            vectors, skip = query_vectors(queries.encoder, queries.texts, None, 32, component.onnx_cache), None
        else:
            vectors, skip = faiss_tuning.sample_queries(index, queries.count)
        measured = faiss_tuning.measure(index, vectors, target, skip)
        if measured is None:
            return None
        return TuningResult(measured.parameters, measured.recall, target, measured.queries, queries.source,
                            measured.reached, measured.grid, measured.exact_p50_ms, time.perf_counter() - started,
                            exhaustive=measured.exhaustive)

    def describe(self, entry: RetrieverManifest) -> str:
        return f"dense {entry.model_id} {entry.parameters.get('factory')} d={entry.parameters.get('dimension')}"
