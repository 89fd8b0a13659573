"""Learned sparse retrieval on Lucene impacts: SPLADE term weights quantized to integer impacts.

A hit's score is exactly the dot product of the quantized query and document vectors (Lucene stores
each impact as the term's frequency and ``ImpactSimilarity`` sums them).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

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
from indexes.kinds.lucene import LuceneComponent, create_empty_lucene
from indexes.kinds.splade_matrix import MatrixSearch, default_probes, open_matrix
from indexes.storage.docstore.manifest import Manifest, RetrieverManifest, folder_size
from indexes.storage.docstore.store import DocStore
from indexes.storage.lucene import backend as lucene_backend
from indexes.storage.lucene import impacts
from indexes.storage.lucene.backend import ImpactIndex
from indexes.storage.lucene.direct import SegmentIds
from indexes.storage.sparse import clusters as clustering
from indexes.storage.sparse import impact_matrix
from indexes.storage.sparse import tuning as sparse_tuning
from indexes.storage.sparse.impact_matrix import ImpactMatrix, MatrixWriter
from indexes.storage.vectors.files import (
    SparseVectors,
    SparseWriter,
    VectorFileError,
    VectorSet,
)
from retrieval.core.filters import Filter
from retrieval.core.options import BuildOptions, OpenOptions
from retrieval.core.types import (
    Encoded,
    PrfConfig,
    RetrieverSpec,
    SparseVector,
)
from retrieval.encoders.cache import shared_encoder
from retrieval.encoders.models import ResolvedModel
from retrieval.encoders.sparse import Quantization, SpladeEncoder, quantize

MAX_SPARSE_WEIGHT = 1e4  # far above any model's weights; keeps quantized impacts inside Lucene's integer range
log = logging.getLogger(__name__)


def quantization(entry: RetrieverManifest) -> Quantization:
    top_k = entry.parameters.get("doc_top_k")
    return Quantization(scale=float(entry.parameters["scale"]), top_k=int(top_k) if top_k else None)


def query_vectors(encoder: SpladeEncoder, queries: Sequence[str], quant: Quantization, mode: str | None,
                  batch_size: int, onnx_cache: Path | None) -> list[SparseVector]:
    return encoder.encode_queries(queries, quant, batch_size=batch_size,  # type: ignore[no-any-return]
                                  runtime=mode or "torch", cache=onnx_cache)


class SpladeSearcher:
    """``encoder`` and ``quantization`` are public so baselines can encode exactly as this searcher does.

    ``matrix``: search in memory (:mod:`indexes.storage.sparse.impact_matrix`) instead of Lucene, metadata filters
    included; PRF reads its feedback hits and their term vectors through Lucene, then searches the moved query in
    memory too.
    """

    matrix: MatrixSearch | None = None

    def __init__(self, name: str, index: ImpactIndex, encoder: SpladeEncoder, quant: Quantization,
                 batch_size: int, onnx_cache: Path) -> None:
        self.name = name
        self._onnx_cache = onnx_cache
        self.encoder = encoder
        self.quantization = quant
        self._index = index
        self._batch_size = batch_size

    def encode_queries(self, queries: Sequence[str], mode: str | None = None) -> list[SparseVector]:
        if mode == "tokens":
            return [self.token_query(q) for q in queries]
        return query_vectors(self.encoder, queries, self.quantization, mode, self._batch_size, self._onnx_cache)

    def token_query(self, query: str) -> SparseVector:
        """Inference-free: the query's word pieces, each weighted by its IDF in this index (times the
        quantization scale, so weights are on the documents' scale for PRF's mix). Following "Towards
        Competitive Search Relevance for Inference-Free Learned Sparse Retrievers" (Geng et al., 2024),
        the documents carry the expansion and the query costs a tokenization."""
        tokens = self.encoder.query_tokens(query)
        scale = self.quantization.scale
        weighted = {t: round(w * scale) for t, w in zip(tokens, self._index.idf(tokens))}
        return {t: w for t, w in weighted.items() if w > 0}

    def given_vectors(self, given: Sequence[Any]) -> list[SparseVector]:
        """Client ``{token: weight}`` maps (the model's float weights), checked against the model's vocabulary and
        quantized with the index's scale, as encoded queries are."""
        if isinstance(given, Encoded):
            return list(given)
        vocabulary = self.encoder.vocabulary
        out = []
        for vector in given:
            if not isinstance(vector, dict) or not vector:
                raise KindError(f"query_sparse for {self.name!r} must be a non-empty {{token: weight}} object")
            unknown = [t for t in vector if t not in vocabulary]
            if unknown:
                raise KindError(f"query_sparse for {self.name!r}: token {unknown[0]!r} is not in the model's "
                                f"vocabulary ({len(unknown)} unknown); send word pieces of {self.encoder.model_info.model_id!r}")
            weights = {}
            for token, weight in vector.items():
                if (not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight)
                        or not 0 <= weight <= MAX_SPARSE_WEIGHT):
                    raise KindError(f"query_sparse for {self.name!r}: the weight of {token!r} must be a finite number "
                                    f"from 0 to {MAX_SPARSE_WEIGHT:g}")
                weights[token] = float(weight)
            out.append(quantize(weights, Quantization(scale=self.quantization.scale)))
        return out

    def search(self, queries: Sequence[str], depth: int, threads: int, prf: PrfConfig | None = None,
               mode: str | None = None, given: Sequence[Any] | None = None, where: Filter | None = None,
               exact: bool = False) -> RetrieverRuns:
        started = time.perf_counter()
        vectors = self.given_vectors(given) if given is not None else self.encode_queries(queries, mode)
        encode_ms = elapsed_ms(started)
        started = time.perf_counter()
        if prf is not None:
            vectors = self._feedback(vectors, prf, threads, where)
        if self.matrix is not None:
            runs = self.matrix.top(vectors, depth, where, exact)
        elif len(vectors) == 1:
            runs = [self._index.search(vectors[0], depth, where)]
        else:
            runs = self._index.batch_search(vectors, depth, threads, where)
        return RetrieverRuns(runs, encode_ms, elapsed_ms(started))

    def _feedback(self, vectors: list[SparseVector], prf: PrfConfig, threads: int, where: Filter | None
                  ) -> list[SparseVector]:
        """Sparse Rocchio: ``alpha * q + beta * mean(top hits' impacts)``, keeping the query's own terms
        and the ``fb_terms`` heaviest new ones, rounded back to integer impacts.

        The hits' impacts are their stored term vectors (exactly what was indexed), never re-encoded. Under a
        metadata filter the feedback hits are filtered too.
        """
        first = self._index.batch_search(vectors, int(prf.fb_docs or 1), threads, where)
        wanted = sorted({d.doc_id for run in first for d in run})
        stored = dict(zip(wanted, self._index.doc_vectors(wanted)))
        if wanted and all(v is None for v in stored.values()):
            raise KindError(f"retriever {self.name!r} stores no document vectors (built before they were stored, or "
                            "with --no-splade-doc-vectors); rebuild the index with them to use SPLADE PRF")
        alpha, beta = float(prf.alpha or 0.0), float(prf.beta or 0.0)
        moved = []
        for vector, run in zip(vectors, first):
            docs = [stored[d.doc_id] for d in run if stored.get(d.doc_id)]
            mix = {t: alpha * w for t, w in vector.items()}
            for doc in docs:
                for t, w in doc.items():  # type: ignore[union-attr]
                    mix[t] = mix.get(t, 0.0) + beta * w / len(docs)
            new_terms = sorted((t for t in mix if t not in vector), key=lambda t: (-mix[t], t))[: int(prf.fb_terms or 0)]
            kept = {t: round(mix[t]) for t in [*vector, *new_terms]}
            moved.append({t: w for t, w in kept.items() if w > 0})
        return moved

    def close(self) -> None:
        self._index.close()


def indexable(encoder: SpladeEncoder) -> SpladeEncoder:
    """A document encoder whose every term the impact writer can index, checked once per encoder: a refusal at
    load time, never a write-ahead-log record that cannot be applied."""
    if not encoder.__dict__.get("_terms_indexable"):
        impacts.check_terms(encoder.vocabulary, f"model {encoder.model_info.model_id!r}")
        encoder.__dict__["_terms_indexable"] = True
    return encoder


class SpladeComponent(LuceneComponent):
    writer_kind = "impact"

    def __init__(self, index_folder: Path, name: str, entry: RetrieverManifest, options: OpenOptions) -> None:
        super().__init__(index_folder, name, entry, options.device)
        self.matrix = open_matrix(self.folder, name, options)
        self.probes = default_probes(entry, self.matrix, options)

    def searcher(self, encoder: Any, store: DocStore, view: ViewState, batch_size: int) -> RetrieverSearcher:
        searcher = super().searcher(encoder, store, view, batch_size)
        if self.matrix is not None and self.matrix.searchable:
            searcher.matrix = MatrixSearch([self.matrix], [store], [view], [self.probes])  # type: ignore[attr-defined]
        return searcher

    @classmethod
    def merged_searcher(cls, components: Sequence[Component], encoder: Any, stores: Sequence[DocStore],
                        views: Sequence[ViewState], batch_size: int) -> RetrieverSearcher:
        """Lucene over every shard (for filters and PRF), and every shard's matrix when all have one in memory."""
        searcher = super().merged_searcher(components, encoder, stores, views, batch_size)
        matrices = [c.matrix for c in components if isinstance(c, SpladeComponent)]
        if len(matrices) == len(components) and all(m is not None and m.searchable for m in matrices):
            probes = [c.probes for c in components if isinstance(c, SpladeComponent)]
            searcher.matrix = MatrixSearch(matrices, stores, views, probes)  # type: ignore[arg-type,attr-defined]
        return searcher

    def apply(self, batch: WriteBatch) -> None:
        super().apply(batch)
        if self.matrix is not None and batch.docs:
            self.matrix.append(batch.added, batch.payload)

    def replay_from(self) -> int:
        """Lucene's commit, or the matrix's where a crash came between the two (Lucene upserts by id, so records it
        holds already are applied again harmlessly; the matrix skips the docnos it holds)."""
        seq = super().replay_from()
        return min(seq, self.matrix.seq) if self.matrix is not None else seq

    def compact(self, dead: Any, threshold: float) -> bool:
        if self.matrix is not None and len(dead):
            self.matrix.remove(dead.tolist())
        return True

    def commit(self, seq: int) -> list[str]:
        files = super().commit(seq)
        if self.matrix is not None:
            files += [f"{self.name}/{f}" for f in self.matrix.commit(seq)]
            if (self.entry.parameters.get("clusters") and self.matrix.clusters is None
                    and self.matrix.rows >= clustering.FOLD_MIN_ROWS and self.matrix.cluster()):
                # an index created empty and filled by live writes gets its clusters once it is large enough
                files = sorted({*files, f"{self.name}/{impact_matrix.FOLDER}/{clustering.FILE}"})
                self.probes = self.probes or default_probes(self.entry, self.matrix, OpenOptions())
        return files

    def _searcher(self, encoder: Any, reader: Any, batch_size: int, ids: SegmentIds | None = None) -> RetrieverSearcher:
        return SpladeSearcher(self.name, ImpactIndex(self.folder, reader=reader, ids=ids or self.segment_ids), encoder,
                              quantization(self.entry), batch_size, self.onnx_cache)

    def _documents(self, batch: WriteBatch) -> Iterable[tuple[str, Any]]:
        return ((d.id, vector, d.metadata) for d, vector in zip(batch.docs, batch.payload))


class SpladeKind(RetrieverKind):
    name = "splade"
    model_option = "sparse_model"
    vector_input = "sparse"
    query_modes = {
        **MODEL_QUERY_MODES,
        "tokens": "inference-free: the query's word pieces weighted by the index's IDF (no model run)",
    }
    # Sparse Rocchio over the stored impacts of the top hits (see SpladeSearcher._feedback).
    prf_methods = {"rocchio": {"fb_docs": 3, "fb_terms": 20, "alpha": 1.0, "beta": 0.5}}
    tuning_target = "tune_recall_sparse"

    def parameters(self, options: BuildOptions) -> dict[str, Any]:
        # doc_vectors: each document's impacts are also stored as a term vector, for PRF. clusters: the approximate
        # structure beside the matrix (indexes/storage/sparse/clusters.py).
        return {"scale": options.splade_scale, "doc_top_k": options.splade_doc_top_k,
                "doc_vectors": options.splade_doc_vectors, "matrix": options.splade_matrix,
                "clusters": options.splade_matrix and options.splade_clusters}

    def load_encoder(self, manifest: Manifest, name: str, device: str, role: str = "query") -> SpladeEncoder:
        encoder = shared_encoder(SpladeEncoder, checked_model(manifest, name), device, role)
        return indexable(encoder) if role == "document" else encoder

    def encode_queries(self, encoder: Any, entry: RetrieverManifest, queries: Sequence[str], mode: str | None,
                       batch_size: int, onnx_cache: Path) -> Encoded | None:
        if mode == "tokens":  # weighted by this index's IDF: each shard weighs with its own
            return None
        return Encoded(query_vectors(encoder, queries, quantization(entry), mode, batch_size, onnx_cache))

    def encode(self, encoder: Any, entry: RetrieverManifest, texts: Sequence[str], batch_size: int) -> list[SparseVector]:
        return encoder.encode_documents(texts, quantization(entry), batch_size=batch_size)  # type: ignore[no-any-return]

    def _encoded(self, ctx: BuildContext, clock: dict[str, float]) -> Iterator[tuple[str, SparseVector]]:
        """Every document of the store as a build encodes it (chunks, GPU pipeline when on CUDA);
        ``clock["encode"]`` collects the seconds spent encoding."""
        assert ctx.model is not None
        o, name = ctx.options, ctx.spec.name
        quant = Quantization(scale=o.splade_scale, top_k=o.splade_doc_top_k)
        encoder = ctx.encoder or self.document_encoder(ctx.model, o)
        batches: list[list[Any]] = []

        def texts() -> Iterator[list[str]]:
            for batch in ctx.store.iter_batches(build_chunk(encoder, o.batch_size)):
                batches.append(batch)
                yield [d.contents for d in batch]

        with ctx.stage.bar(len(ctx.store), f"{name} encode") as bar:
            stream = encoder.encode_documents_stream(texts(), quant, batch_size=o.batch_size)
            try:
                while True:
                    started = time.perf_counter()
                    encoded = next(stream, None)
                    clock["encode"] = clock.get("encode", 0.0) + time.perf_counter() - started
                    if encoded is None:
                        break
                    batch = batches.pop(0)
                    ctx.stage(f"{name}-encode")
                    yield from zip((d.id for d in batch), encoded)
                    bar.update(len(batch))
            finally:
                stream.close()
                if ctx.encoder is None:
                    encoder.close()

    def _chunks(self, ctx: BuildContext, clock: dict[str, float]) -> Iterator[tuple[impacts.Chunk, list[str]]]:
        """Every document of the store for the impact writer, in store order, in chunks: where the vectors file
        holds their lines (``--vectors``: Java reads them), else the encoder's vectors as JSON lines."""
        size = impacts.chunk_documents(len(ctx.store), ctx.options.threads)
        if ctx.vectors is not None:
            ids = ctx.store.live_ids()
            begin = 0
            with ctx.stage.bar(len(ids), f"{ctx.spec.name} index vectors") as bar:
                for count, ranges in ctx.vectors.line_ranges(ids, size):
                    yield impacts.Chunk(count, file=ctx.vectors.path, ranges=ranges), ids[begin:begin + count]
                    begin += count
                    bar.update(count)
            return
        batch: list[tuple[str, SparseVector]] = []
        for row in self._encoded(ctx, clock):
            batch.append(row)
            if len(batch) == size:
                yield impacts.Chunk(len(batch), lines=impacts.vector_lines(batch)), [doc_id for doc_id, _ in batch]
                batch = []
        if batch:
            yield impacts.Chunk(len(batch), lines=impacts.vector_lines(batch)), [doc_id for doc_id, _ in batch]

    def build(self, ctx: BuildContext) -> RetrieverManifest:
        assert ctx.model is not None
        o, name = ctx.options, ctx.spec.name
        total = len(ctx.store)
        clock: dict[str, float] = {}
        metadata = ctx.store.iter_metadata() if ctx.fields else None
        # Parts in docno order, which is the store's order in a build (as FAISS's vector i is docno i).
        matrix = ctx.work / f"{name}-matrix" if o.splade_matrix else None

        def with_fields() -> Iterator[impacts.Chunk]:
            for chunk, ids in self._chunks(ctx, clock):
                if metadata is not None:
                    fields = []
                    for doc_id in ids:
                        same_id, values = next(metadata)
                        assert same_id == doc_id, f"metadata of {same_id!r} met the vector of {doc_id!r}"
                        fields.append(impacts.metadata_line(values) + b"\n")
                    chunk.fields = b"".join(fields)
                yield chunk

        started = time.perf_counter()
        try:
            stages = lucene_backend.build_impact(with_fields(), ctx.work / name, ctx.out, o.threads, expected=total,
                                                 doc_vectors=o.splade_doc_vectors, matrix=matrix)
        except impacts.ImpactInputError as exc:
            if ctx.vectors is not None:  # the file's fault: say which file
                raise VectorFileError(f"{ctx.vectors.path}: {exc}") from None
            raise
        if matrix is not None:
            if not matrix.is_dir() or not any(matrix.glob("part-*.npz")):
                MatrixWriter(matrix).close()  # no documents: one empty part, as an empty index has
            shutil.move(str(matrix), str(ctx.out / impact_matrix.FOLDER))
        encode_seconds = clock.get("encode", 0.0)
        index_seconds = time.perf_counter() - started - encode_seconds
        structure = self._cluster(ctx, stages) if matrix is not None and o.splade_clusters else {}
        ctx.stage(f"{name}-indexed")
        # From vectors, the quantization is the encoder's; storing term vectors is this build's choice.
        encoded = {k: ctx.vector_set.parameters[k] for k in ("scale", "doc_top_k")} if ctx.vector_set else {}
        postings = int(stages.pop("postings"))
        parameters = {**self.parameters(o), **encoded, "avg_terms_per_doc": round(postings / max(total, 1), 2),
                      **structure}
        stages["read_s"] = round(stages["read_s"] - encode_seconds, 3)  # what producing the chunks took, encoding aside
        return RetrieverManifest(name, ctx.model.model_id, ctx.model.weights_sha256, parameters,
                                 round(encode_seconds + index_seconds, 3), round(encode_seconds, 3),
                                 round(index_seconds, 3), folder_size(ctx.out), kind=self.name,
                                 stages={k: float(v) for k, v in stages.items() if isinstance(v, (int, float))})

    def _cluster(self, ctx: BuildContext, stages: dict[str, Any]) -> dict[str, Any]:
        """The approximate structure over the built matrix (:mod:`indexes.storage.sparse.clusters`): its cluster count
        for the manifest's parameters; what building it cost goes into ``stages`` (``cluster_s``, ``cluster_load_s``),
        beside the Lucene build's, so that parameters stay the same from build to build."""
        started = time.perf_counter()
        matrix = ImpactMatrix(ctx.out)
        loaded = time.perf_counter() - started
        if matrix.cluster() is None or matrix.clusters is None:
            return {}
        ctx.stage(f"{ctx.spec.name}-clustered")
        stages["cluster_s"], stages["cluster_load_s"] = round(time.perf_counter() - started, 3), round(loaded, 3)
        return {"cluster_count": matrix.clusters.count}

    def tune(self, component: Component, queries: TuningQueries, target: float) -> TuningResult | None:
        """``probes`` reaching ``target`` recall@10 against the exhaustive matrix search
        (:mod:`indexes.storage.sparse.tuning`), on the given query texts (encoded as searches encode them) or on
        documents' heaviest impacts."""
        matrix = component.matrix if isinstance(component, SpladeComponent) else None
        if matrix is None or matrix.clusters is None or not matrix.searchable:
            return None
        started = time.perf_counter()
        if queries.texts is not None:
            vectors = query_vectors(queries.encoder, queries.texts, quantization(component.entry), None, 32,
                                    component.onnx_cache)
        else:
            vectors = sparse_tuning.sample_queries(matrix, queries.count)
        measured = sparse_tuning.measure(matrix, vectors, target)
        if measured is None:
            return None
        return TuningResult({"probes": measured.probes, "clusters": matrix.clusters.count}, measured.recall, target,
                            measured.queries, queries.source, measured.reached, measured.grid, measured.exact_p50_ms,
                            time.perf_counter() - started, exhaustive=measured.probes >= matrix.clusters.count)

    def document_encoder(self, model: ResolvedModel | None, options: BuildOptions) -> SpladeEncoder:
        assert model is not None
        return indexable(SpladeEncoder(model, device=options.device))

    def export(self, ctx: BuildContext, out: Path) -> VectorSet:
        assert ctx.model is not None
        writer = SparseWriter(out / f"{ctx.spec.name}.jsonl")
        try:
            writer.write(self._encoded(ctx, {}))
        finally:
            writer.close()
        parameters = {"scale": ctx.options.splade_scale, "doc_top_k": ctx.options.splade_doc_top_k}
        return VectorSet(ctx.spec.name, self.name, ctx.model.model_id, ctx.model.weights_sha256, parameters,
                         writer.count, [writer.path.name])

    def read_vectors(self, folder: Path, vector_set: VectorSet, ids: Sequence[str], partial: bool = False
                     ) -> SparseVectors:
        return SparseVectors(folder / vector_set.files[0], ids, partial)

    def create_empty(self, out: Path, spec: RetrieverSpec, model: ResolvedModel | None,
                     options: BuildOptions) -> RetrieverManifest:
        assert model is not None
        create_empty_lucene(out, "impact", doc_vectors=options.splade_doc_vectors)
        if options.splade_matrix:
            MatrixWriter(out / impact_matrix.FOLDER).close()
        return RetrieverManifest(spec.name, model.model_id, model.weights_sha256,
                                 {**self.parameters(options), "avg_terms_per_doc": 0}, 0.0, 0.0, 0.0, folder_size(out),
                                 kind=self.name)

    def open(self, index_folder: Path, name: str, entry: RetrieverManifest, options: OpenOptions) -> Component:
        return SpladeComponent(index_folder, name, entry, options)

    def describe(self, entry: RetrieverManifest) -> str:
        return f"splade {entry.model_id} scale={entry.parameters.get('scale')}"
