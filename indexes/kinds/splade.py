"""Learned sparse retrieval on Lucene impacts: SPLADE term weights quantized to integer impacts.

A hit's score is exactly the dot product of the quantized query and document vectors (Lucene stores
each impact as the term's frequency and ``ImpactSimilarity`` sums them).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from indexes.kinds.base import (
    BuildContext,
    Component,
    RetrieverKind,
    RetrieverRuns,
    RetrieverSearcher,
    WriteBatch,
    checked_model,
    elapsed_ms,
)
from indexes.kinds.lucene import LuceneComponent, create_empty_lucene
from indexes.storage import lucene_backend
from indexes.storage.lucene_backend import ImpactIndex
from indexes.storage.manifest import Manifest, RetrieverManifest, folder_size
from retrieval.core.options import BuildOptions
from retrieval.core.types import RetrieverSpec, SparseVector
from retrieval.encoders.cache import shared_encoder
from retrieval.encoders.models import ResolvedModel
from retrieval.encoders.sparse import Quantization, SpladeEncoder


def quantization(entry: RetrieverManifest) -> Quantization:
    top_k = entry.parameters.get("doc_top_k")
    return Quantization(scale=float(entry.parameters["scale"]), top_k=int(top_k) if top_k else None)


class SpladeSearcher:
    """``encoder`` and ``quantization`` are public so baselines can encode exactly as this searcher does."""

    def __init__(self, name: str, index: ImpactIndex, encoder: SpladeEncoder, quant: Quantization,
                 batch_size: int) -> None:
        self.name = name
        self.encoder = encoder
        self.quantization = quant
        self._index = index
        self._batch_size = batch_size

    def encode_queries(self, queries: Sequence[str]) -> list[SparseVector]:
        return self.encoder.encode_queries(queries, self.quantization, batch_size=self._batch_size)

    def search(self, queries: Sequence[str], depth: int, threads: int) -> RetrieverRuns:
        started = time.perf_counter()
        vectors = self.encode_queries(queries)
        encode_ms = elapsed_ms(started)
        started = time.perf_counter()
        if len(vectors) == 1:
            runs = [self._index.search(vectors[0], depth)]
        else:
            runs = self._index.batch_search(vectors, depth, threads)
        return RetrieverRuns(runs, encode_ms, elapsed_ms(started))

    def close(self) -> None:
        self._index.close()


class SpladeComponent(LuceneComponent):
    writer_kind = "impact"

    def _searcher(self, encoder: Any, reader: Any, batch_size: int) -> RetrieverSearcher:
        return SpladeSearcher(self.name, ImpactIndex(self.folder, reader=reader, ids=self.segment_ids), encoder, quantization(self.entry),
                              batch_size)

    def _documents(self, batch: WriteBatch) -> Iterable[tuple[str, Any]]:
        return zip((d.id for d in batch.docs), batch.payload)


class SpladeKind(RetrieverKind):
    name = "splade"
    model_option = "sparse_model"

    def parameters(self, options: BuildOptions) -> dict[str, Any]:
        return {"scale": options.splade_scale, "doc_top_k": options.splade_doc_top_k}

    def load_encoder(self, manifest: Manifest, name: str, device: str, role: str = "query") -> SpladeEncoder:
        return shared_encoder(SpladeEncoder, checked_model(manifest, name), device, role)

    def encode(self, encoder: Any, entry: RetrieverManifest, texts: Sequence[str], batch_size: int) -> list[SparseVector]:
        return encoder.encode_documents(texts, quantization(entry), batch_size=batch_size)  # type: ignore[no-any-return]

    def build(self, ctx: BuildContext) -> RetrieverManifest:
        assert ctx.model is not None
        o, name = ctx.options, ctx.spec.name
        quant = Quantization(scale=o.splade_scale, top_k=o.splade_doc_top_k)
        encoder = SpladeEncoder(ctx.model, device=o.device)
        total = len(ctx.store)
        encode_seconds = 0.0
        terms = 0

        def vectors() -> Iterator[tuple[str, SparseVector]]:
            nonlocal encode_seconds, terms
            with ctx.stage.bar(total, f"{name} encode") as bar:
                for batch in ctx.store.iter_batches(o.batch_size * 8):
                    started = time.perf_counter()
                    encoded = encoder.encode_documents([d.contents for d in batch], quant, batch_size=o.batch_size)
                    encode_seconds += time.perf_counter() - started
                    ctx.stage(f"{name}-encode")
                    for doc, vector in zip(batch, encoded):
                        terms += len(vector)
                        yield doc.id, vector
                    bar.update(len(batch))

        started = time.perf_counter()
        lucene_backend.build_impact(vectors(), ctx.work / name, ctx.out, o.threads, expected=total)
        index_seconds = time.perf_counter() - started - encode_seconds
        ctx.stage(f"{name}-indexed")
        parameters = {**self.parameters(o), "avg_terms_per_doc": round(terms / max(total, 1), 2)}
        return RetrieverManifest(name, ctx.model.model_id, ctx.model.weights_sha256, parameters,
                                 round(encode_seconds + index_seconds, 3), round(encode_seconds, 3),
                                 round(index_seconds, 3), folder_size(ctx.out), kind=self.name)

    def create_empty(self, out: Path, spec: RetrieverSpec, model: ResolvedModel | None,
                     options: BuildOptions) -> RetrieverManifest:
        assert model is not None
        create_empty_lucene(out, "impact")
        return RetrieverManifest(spec.name, model.model_id, model.weights_sha256,
                                 {**self.parameters(options), "avg_terms_per_doc": 0}, 0.0, 0.0, 0.0, folder_size(out),
                                 kind=self.name)

    def open(self, index_folder: Path, name: str, entry: RetrieverManifest, device: str) -> Component:
        return SpladeComponent(index_folder, name, entry, device)

    def describe(self, entry: RetrieverManifest) -> str:
        return f"splade {entry.model_id} scale={entry.parameters.get('scale')}"
