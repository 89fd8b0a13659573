"""Batch index builds: corpus -> document store -> each chosen retriever -> manifest -> publish.

Everything is written into a private build folder and published with one atomic rename
(see :mod:`indexes.layout`), so a failed, interrupted or killed build never touches the live index.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

from indexes import faiss_backend, lucene_backend
from indexes.corpus import CorpusError, Document, Skipped, file_sha256, iter_documents, resolve_corpus_file
from indexes.docstore import DocStore
from indexes.layout import IndexRoot, validate_name
from indexes.manifest import RETRIEVERS, Manifest, RetrieverManifest, checksum_files, folder_size
from retrieval.dense_encoder import DenseEncoder
from retrieval.models import ResolvedModel, resolve_model
from retrieval.settings import DEFAULT_DENSE_MODEL, DEFAULT_SPARSE_MODEL
from retrieval.sparse_encoder import Quantization, SparseVector, SpladeEncoder


class BuildError(ValueError):
    """Bad build options; the message says what to fix."""


@dataclass
class BuildOptions:
    retrievers: tuple[str, ...] = RETRIEVERS
    device: str = "cpu"
    batch_size: int = 32
    sparse_model: str = DEFAULT_SPARSE_MODEL
    dense_model: str = DEFAULT_DENSE_MODEL
    faiss_factory: str = "Flat"
    splade_scale: float = 100.0
    splade_doc_top_k: int | None = None
    threads: int = 2
    progress: bool = True
    on_error: str = "fail"  # "skip": leave bad corpus lines out, counted in the manifest
    # Test hook: called with a stage name as the build passes it (crash-safety tests kill there).
    on_stage: Callable[[str], None] | None = field(default=None, repr=False)
    # Progress for background jobs: (stage, documents done in it, total or None).
    on_progress: Callable[[str, int, int | None], None] | None = field(default=None, repr=False)


def parse_retrievers(spec: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in RETRIEVERS]
    if unknown:
        raise BuildError(f"unknown retriever {unknown[0]!r}; choose from {', '.join(RETRIEVERS)}")
    if not names:
        raise BuildError(f"no retriever chosen; choose from {', '.join(RETRIEVERS)}")
    return tuple(dict.fromkeys(names))


class _Stage:
    def __init__(self, options: BuildOptions) -> None:
        self.options = options

    def __call__(self, name: str) -> None:
        if self.options.on_stage:
            self.options.on_stage(name)

    def bar(self, total: int | None, desc: str) -> tqdm:
        bar = tqdm(total=total, desc=desc, unit="doc", disable=not self.options.progress, dynamic_ncols=True, leave=True)
        hook = self.options.on_progress
        if hook is not None:
            done = 0
            plain_update = bar.update

            def update(n: float | None = 1) -> bool | None:
                nonlocal done
                done += int(n or 0)
                hook(desc, done, total)
                return plain_update(n)

            bar.update = update  # type: ignore[method-assign]
        return bar


def _build_splade(store: DocStore, work: Path, out: Path, model: ResolvedModel, o: BuildOptions, stage: _Stage) -> RetrieverManifest:
    quant = Quantization(scale=o.splade_scale, top_k=o.splade_doc_top_k)
    encoder = SpladeEncoder(model, device=o.device)
    total = len(store)
    encode_seconds = 0.0
    terms = 0

    def vectors() -> Iterator[tuple[str, SparseVector]]:
        nonlocal encode_seconds, terms
        with stage.bar(total, "splade encode") as bar:
            for batch in store.iter_batches(o.batch_size * 8):
                started = time.perf_counter()
                encoded = encoder.encode_documents([d.contents for d in batch], quant, batch_size=o.batch_size)
                encode_seconds += time.perf_counter() - started
                stage("splade-encode")
                for doc, vector in zip(batch, encoded):
                    terms += len(vector)
                    yield doc.id, vector
                bar.update(len(batch))

    started = time.perf_counter()
    lucene_backend.build_impact(vectors(), work, out, o.threads, expected=total)
    index_seconds = time.perf_counter() - started - encode_seconds
    stage("splade-indexed")
    return RetrieverManifest(
        name="splade",
        model_id=model.model_id,
        weights_sha256=model.weights_sha256,
        parameters={"scale": o.splade_scale, "doc_top_k": o.splade_doc_top_k, "avg_terms_per_doc": round(terms / max(total, 1), 2)},
        build_seconds=round(encode_seconds + index_seconds, 3),
        encode_seconds=round(encode_seconds, 3),
        index_seconds=round(index_seconds, 3),
        size_bytes=folder_size(out),
    )


def _build_bm25(store: DocStore, work: Path, out: Path, o: BuildOptions, stage: _Stage) -> RetrieverManifest:
    total = len(store)

    def pairs() -> Iterator[tuple[str, str]]:
        with stage.bar(total, "bm25 stage") as bar:
            for batch in store.iter_batches(10_000):
                for doc in batch:
                    yield doc.id, doc.contents
                bar.update(len(batch))

    started = time.perf_counter()
    stage("bm25-start")
    lucene_backend.build_bm25(pairs(), work, out, o.threads, expected=total)
    seconds = time.perf_counter() - started
    stage("bm25-indexed")
    return RetrieverManifest(
        name="bm25",
        model_id=None,
        weights_sha256=None,
        parameters={"k1": lucene_backend.BM25_K1, "b": lucene_backend.BM25_B, "analyzer": "default (Anserini English, Porter)"},
        build_seconds=round(seconds, 3),
        encode_seconds=0.0,
        index_seconds=round(seconds, 3),
        size_bytes=folder_size(out),
    )


def _build_dense(store: DocStore, out: Path, model: ResolvedModel, o: BuildOptions, stage: _Stage) -> RetrieverManifest:
    encoder = DenseEncoder(model, device=o.device)
    faiss_backend.check_factory(o.faiss_factory, encoder.dimension, len(store))
    parts: list[np.ndarray] = []
    started = time.perf_counter()
    with stage.bar(len(store), "dense encode") as bar:
        for batch in store.iter_batches(o.batch_size * 8):
            parts.append(encoder.encode_documents([d.contents for d in batch], batch_size=o.batch_size))
            stage("dense-encode")
            bar.update(len(batch))
    encode_seconds = time.perf_counter() - started
    started = time.perf_counter()
    index = faiss_backend.build(np.concatenate(parts), o.faiss_factory, device=o.device)
    stage("dense-faiss-built")
    faiss_backend.save(index, out)
    stage("dense-faiss-written")
    index_seconds = time.perf_counter() - started
    return RetrieverManifest(
        name="dense",
        model_id=model.model_id,
        weights_sha256=model.weights_sha256,
        parameters={"factory": o.faiss_factory, "metric": "inner_product", "dimension": encoder.dimension, "normalized": True},
        build_seconds=round(encode_seconds + index_seconds, 3),
        encode_seconds=round(encode_seconds, 3),
        index_seconds=round(index_seconds, 3),
        size_bytes=folder_size(out),
    )


def build_index(corpus: Path, name: str, root: IndexRoot, options: BuildOptions) -> Manifest:
    """Build ``name`` from ``corpus`` and publish it atomically; returns its manifest."""
    validate_name(name)
    retrievers = parse_retrievers(options.retrievers)
    corpus_file = resolve_corpus_file(Path(corpus))
    models = {
        "splade": resolve_model(options.sparse_model) if "splade" in retrievers else None,
        "dense": resolve_model(options.dense_model) if "dense" in retrievers else None,
    }
    if "dense" in retrievers:
        from faiss import index_factory  # noqa: F401  (fail early if FAISS is missing)
    stage = _Stage(options)
    root.root.mkdir(parents=True, exist_ok=True)
    with root.lock(name):
        root.collect_garbage(name)
        building = root.new_build_folder(name)
        work = building / ".work"
        try:
            store = DocStore.create(building)
            skipped = Skipped()
            with stage.bar(None, "read corpus") as bar:
                def kept() -> Iterator[Document]:
                    for doc in iter_documents(corpus_file, options.on_error, skipped):
                        bar.update(1)
                        if not doc.contents.strip():
                            # Lucene cannot index an empty document; leave it out of every retriever alike.
                            skipped.add("empty", doc.id)
                            continue
                        yield doc

                store.add(kept())
            if not len(store):
                raise CorpusError(f"{corpus_file}: every document is empty (no title and no text)")
            for reason, count in skipped.counts.items():
                examples = skipped.examples[reason]
                print(f"warning: skipped {count} document(s), {reason}: {', '.join(examples[:10])}"
                      f"{' ...' if count > 10 else ''}", file=sys.stderr)
            stage("docstore")
            manifest = Manifest(
                name=name,
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                corpus_path=str(corpus_file.resolve()),
                corpus_sha256=file_sha256(corpus_file),
                doc_count=len(store),
                skipped=skipped.as_dict(),
            )
            for retriever in retrievers:
                out = building / retriever
                if retriever == "bm25":
                    info = _build_bm25(store, work, out, options, stage)
                elif retriever == "splade":
                    info = _build_splade(store, work, out, models["splade"], options, stage)  # type: ignore[arg-type]
                else:
                    info = _build_dense(store, out, models["dense"], options, stage)  # type: ignore[arg-type]
                manifest.retrievers[retriever] = info
            store.close()
            shutil.rmtree(work, ignore_errors=True)
            manifest.docstore_bytes = folder_size(building / DocStore.FILE)
            manifest.files = checksum_files(building)
            manifest.write(building)
            stage("manifest")
            root.publish(name, building, on_renamed=lambda: stage("renamed"))
            stage("published")
            return manifest
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise


def create_empty_index(name: str, root: IndexRoot, options: BuildOptions) -> Manifest:
    """Publish an index with no documents, ready for live writes (``hybrid index add``, the API)."""
    from indexes.lucene_writer import LuceneWriter

    validate_name(name)
    retrievers = parse_retrievers(options.retrievers)
    root.root.mkdir(parents=True, exist_ok=True)
    with root.lock(name):
        if root.path(name).exists():
            raise BuildError(f"index {name!r} already exists; delete it first or add documents to it")
        root.collect_garbage(name)
        building = root.new_build_folder(name)
        try:
            DocStore.create(building).close()
            manifest = Manifest(name=name, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                corpus_path="", corpus_sha256="", doc_count=0)
            for retriever in retrievers:
                out = building / retriever
                model_id = weights = None
                if retriever == "bm25":
                    params: dict[str, object] = {"k1": lucene_backend.BM25_K1, "b": lucene_backend.BM25_B,
                                                 "analyzer": "default (Anserini English, Porter)"}
                elif retriever == "splade":
                    model = resolve_model(options.sparse_model)
                    model_id, weights = model.model_id, model.weights_sha256
                    params = {"scale": options.splade_scale, "doc_top_k": options.splade_doc_top_k, "avg_terms_per_doc": 0}
                else:
                    model = resolve_model(options.dense_model)
                    model_id, weights = model.model_id, model.weights_sha256
                    from retrieval.pipeline import shared_encoder

                    dimension = shared_encoder("dense", model, options.device).dimension
                    faiss_backend.save(faiss_backend.empty(options.faiss_factory, dimension), out)
                    params = {"factory": options.faiss_factory, "metric": "inner_product", "dimension": dimension,
                              "normalized": True}
                if retriever != "dense":
                    writer = LuceneWriter(out, "bm25" if retriever == "bm25" else "impact", create=True)
                    writer.commit(0)
                    writer.close()
                    (out / "write.lock").unlink(missing_ok=True)
                manifest.retrievers[retriever] = RetrieverManifest(retriever, model_id, weights, params, 0.0, 0.0, 0.0,
                                                                   folder_size(out))
            manifest.docstore_bytes = folder_size(building / DocStore.FILE)
            manifest.files = checksum_files(building)
            manifest.write(building)
            root.publish(name, building)
            return manifest
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise


__all__ = ["BuildError", "BuildOptions", "CorpusError", "build_index", "create_empty_index", "parse_retrievers"]
