"""BM25 on Lucene: Anserini's default analyzer, title and text in one field, as Pyserini's BEIR
"flat" indexes; no model, so nothing to encode."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from indexes.kinds.base import (
    BuildContext,
    Component,
    KindError,
    RetrieverKind,
    RetrieverRuns,
    RetrieverSearcher,
    WriteBatch,
    elapsed_ms,
)
from indexes.kinds.lucene import LuceneComponent, create_empty_lucene
from indexes.storage.docstore.manifest import RetrieverManifest, folder_size
from indexes.storage.lucene import backend as lucene_backend
from indexes.storage.lucene.backend import Bm25Index
from indexes.storage.lucene.direct import SegmentIds
from retrieval.core.filters import Filter
from retrieval.core.options import BuildOptions, OpenOptions
from retrieval.core.types import PrfConfig, RetrieverSpec
from retrieval.encoders.models import ResolvedModel


class Bm25Searcher:
    def __init__(self, name: str, index: Bm25Index) -> None:
        self.name = name
        self._index = index

    def search(self, queries: Sequence[str], depth: int, threads: int, prf: PrfConfig | None = None,
               mode: str | None = None, given: Sequence[Any] | None = None, where: Filter | None = None,
               exact: bool = False) -> RetrieverRuns:
        if prf is not None and where is not None:
            raise KindError(f"retriever {self.name!r}: BM25 PRF runs inside Anserini, whose feedback round cannot "
                            "apply a metadata filter; drop 'prf' for it or the filter")
        started = time.perf_counter()
        if len(queries) == 1:
            runs = [self._index.search(queries[0], depth, prf, where)]
        else:
            runs = self._index.batch_search(queries, depth, threads, prf, where)
        return RetrieverRuns(runs, 0.0, elapsed_ms(started))

    def close(self) -> None:
        self._index.close()


class Bm25Component(LuceneComponent):
    writer_kind = "bm25"

    def _searcher(self, encoder: Any, reader: Any, batch_size: int, ids: SegmentIds | None = None) -> RetrieverSearcher:
        params = self.entry.parameters
        return Bm25Searcher(self.name, Bm25Index(self.folder, k1=params["k1"], b=params["b"], reader=reader,
                                                      ids=ids or self.segment_ids))

    def _documents(self, batch: WriteBatch) -> Iterable[tuple[str, Any]]:
        return ((d.id, d.contents, d.metadata) for d in batch.docs)


class Bm25Kind(RetrieverKind):
    name = "bm25"
    # Anserini's defaults (and Pyserini's BEIR "+rm3" runs): fb_terms 10, fb_docs 10, query weight 0.5.
    prf_methods = {
        "rm3": {"fb_docs": 10, "fb_terms": 10, "original_weight": 0.5},
        "rocchio": {"fb_docs": 10, "fb_terms": 10, "alpha": 1.0, "beta": 0.75},
    }

    def parameters(self, options: BuildOptions) -> dict[str, Any]:
        return {"k1": lucene_backend.BM25_K1, "b": lucene_backend.BM25_B, "analyzer": "default (Anserini English, Porter)"}

    def build(self, ctx: BuildContext) -> RetrieverManifest:
        total = len(ctx.store)

        def docs() -> Iterator[tuple[str, str, dict[str, Any]]]:
            with ctx.stage.bar(total, f"{ctx.spec.name} stage") as bar:
                for batch in ctx.store.iter_batches(10_000):
                    for doc in batch:
                        yield doc.id, doc.contents, doc.metadata
                    bar.update(len(batch))

        started = time.perf_counter()
        ctx.stage(f"{ctx.spec.name}-start")
        lucene_backend.build_bm25(docs(), ctx.work / ctx.spec.name, ctx.out, ctx.options.threads, expected=total,
                                  with_metadata=bool(ctx.fields))
        seconds = time.perf_counter() - started
        ctx.stage(f"{ctx.spec.name}-indexed")
        return RetrieverManifest(ctx.spec.name, None, None, self.parameters(ctx.options), round(seconds, 3), 0.0,
                                 round(seconds, 3), folder_size(ctx.out), kind=self.name)

    def create_empty(self, out: Path, spec: RetrieverSpec, model: ResolvedModel | None,
                     options: BuildOptions) -> RetrieverManifest:
        create_empty_lucene(out, "bm25")
        return RetrieverManifest(spec.name, None, None, self.parameters(options), 0.0, 0.0, 0.0, folder_size(out),
                                 kind=self.name)

    def open(self, index_folder: Path, name: str, entry: RetrieverManifest, options: OpenOptions) -> Component:
        return Bm25Component(index_folder, name, entry, options.device)

    def describe(self, entry: RetrieverManifest) -> str:
        return f"bm25 k1={entry.parameters.get('k1')} b={entry.parameters.get('b')}"
