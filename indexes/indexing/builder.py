"""Batch index builds: corpus -> document store -> each chosen retriever -> manifest -> publish.

Everything is written into a private build folder and published with one atomic rename
(see :mod:`indexes.storage.docstore.layout`), so a failed, interrupted or killed build never touches the live index.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from indexes.indexing.folder_build import (
    BuildError,
    ShardJob,
    build_folder,
    build_shard,
    fill_store,
    merged_manifest,
    record_engine,
    resolve_retrievers,
    with_vectors,
)
from indexes.indexing.tuning import queries_beside
from indexes.kinds import get_kind, parse_retrievers
from indexes.kinds.base import BuildContext, BuildStage, RetrieverKind
from indexes.storage.docstore.corpus import (
    CorpusError,
    Skipped,
    file_sha256,
    iter_documents,
    resolve_corpus_file,
)
from indexes.storage.docstore.layout import IndexRoot, validate_name
from indexes.storage.docstore.manifest import Manifest, checksum_files, folder_size
from indexes.storage.docstore.shards import shard_folder, shard_of
from indexes.storage.docstore.store import DocStore
from indexes.storage.vectors.files import VECTORS_MANIFEST, VectorsManifest
from retrieval.core.disk import disk_full, is_disk_full
from retrieval.core.options import BuildOptions
from retrieval.core.settings import Settings


def build_options(options: BuildOptions | None, overrides: dict[str, Any]) -> BuildOptions:
    """``options`` (default: from the settings) with ``overrides``; retriever names parsed where given as text."""
    if "retrievers" in overrides:
        overrides["retrievers"] = parse_retrievers(overrides["retrievers"])
    if options is None:
        return BuildOptions.from_settings(Settings(), **overrides)
    return options.with_(**overrides) if overrides else options


def build_index(corpus: str | Path, name: str, root: IndexRoot | str | Path, options: BuildOptions | None = None,
                vectors: str | Path | None = None, **overrides: Any) -> Manifest:
    """Build ``name`` from ``corpus`` under the index root ``root`` and publish it atomically; returns its manifest.

    ``options`` default to the settings' (``HYBRID_*``); ``overrides`` replace single fields of them, and
    ``retrievers`` may be given as names or ``NAME=KIND[:MODEL]`` strings:
    ``build_index("corpus.jsonl", "news", "indexes", retrievers=["bm25", "splade"], progress=False)``.

    ``vectors`` is a folder from ``hybrid encode`` (:func:`encode_corpus`): retrievers with vectors there are
    indexed from them instead of being encoded; they must cover exactly the corpus's documents.
    ``options.shards`` > 1 builds one complete index per shard (:mod:`indexes.storage.docstore.shards`), published together.
    """
    options = build_options(options, overrides)
    root = root if isinstance(root, IndexRoot) else IndexRoot(Path(root))
    validate_name(name)
    corpus_file = resolve_corpus_file(Path(corpus))
    if options.shards < 1:
        raise BuildError(f"shards must be at least 1, got {options.shards}")
    vector_manifest = VectorsManifest.read(Path(vectors)) if vectors is not None else None
    retrievers = with_vectors(resolve_retrievers(options), vector_manifest)
    stage = BuildStage(options)
    root.root.mkdir(parents=True, exist_ok=True)
    with root.lock(name):
        root.collect_garbage(name)
        building = root.new_build_folder(name)
        try:
            if options.shards > 1:
                manifest = _build_shards(corpus_file, name, building, options, stage, vectors)
            else:
                if options.ray and vectors is None and any(model is not None for _, model in retrievers):
                    vectors = building / ".work" / "vectors"
                    retrievers = with_vectors(resolve_retrievers(options), _encode(corpus_file, vectors, options))
                manifest = build_folder(corpus_file, name, building, options, stage, retrievers, vectors,
                                        queries=options.tune_queries or queries_beside(corpus_file))
            manifest.files = {} if manifest.shards else checksum_files(building)  # shards record their own
            manifest.write(building)
            stage("manifest")
            root.publish(name, building, on_renamed=lambda: stage("renamed"))
            stage("published")
            return manifest
        except BaseException as exc:
            shutil.rmtree(building, ignore_errors=True)
            if isinstance(exc, Exception) and is_disk_full(exc):
                raise disk_full(exc, f"building index {name!r}", "nothing was published (the index, if it existed, "
                                     "is unchanged) and the partial build was removed") from None
            raise


def _build_shards(corpus_file: Path, name: str, building: Path, options: BuildOptions, stage: BuildStage,
                  vectors: Path | None) -> Manifest:
    """Split the corpus by :func:`shard_of` and build each shard as a complete index in ``building/shards/NNN``;
    returns the index's manifest, listing the shards (each has its own, with its own checksums).

    The documents are encoded once, in corpus order, exactly as an unsharded build encodes them (the same batches,
    so bit-identical vectors; :func:`encode_corpus`), unless ``vectors`` already holds them; each shard is then
    indexed from its part of the vectors. That is also the shape of a distributed build: encoders anywhere,
    one writer per shard.
    """
    count = options.shards
    work = building / ".work"
    work.mkdir(parents=True)
    parts = [work / f"shard-{i:03d}.jsonl" for i in range(count)]
    skipped = Skipped()
    handles = [p.open("w", encoding="utf-8") for p in parts]
    try:
        with stage.bar(None, "split corpus") as bar:
            for doc in iter_documents(corpus_file, options.on_error, skipped):
                row = {"_id": doc.id, "title": doc.title, "text": doc.text, "metadata": doc.metadata}
                handles[shard_of(doc.id, count)].write(json.dumps(row, ensure_ascii=False) + "\n")
                bar.update(1)
    finally:
        for handle in handles:
            handle.close()
    empty = [i for i, p in enumerate(parts) if p.stat().st_size == 0]
    if empty:
        raise BuildError(f"shard {empty[0]} of {count} got no documents; use fewer shards for this corpus")
    if vectors is None and any(model is not None for _, model in resolve_retrievers(options)):
        vectors = work / "vectors"
        _encode(corpus_file, vectors, options)
    vector_manifest = VectorsManifest.read(vectors) if vectors is not None else None
    retrievers = with_vectors(resolve_retrievers(options), vector_manifest)
    corpus_sha256 = file_sha256(corpus_file)
    queries = options.tune_queries or queries_beside(corpus_file)
    jobs = [ShardJob(part, name, shard_folder(building, i), corpus_file.resolve(), corpus_sha256, retrievers, vectors,
                     queries) for i, part in enumerate(parts)]
    shards: list[Manifest] = []
    if options.ray:
        from indexes.indexing.ray_build import build_shards_on_ray

        shards = build_shards_on_ray(jobs, options)
    else:
        for i, job in enumerate(jobs):
            shards.append(build_shard(job, options, stage))
            stage(f"shard-{i}")
    folders = [str(job.folder.relative_to(building)) for job in jobs]
    if vector_manifest is not None and sum(s.doc_count for s in shards) != vector_manifest.documents:
        raise BuildError(f"{vectors}: vectors of {vector_manifest.documents} documents for a corpus of "
                         f"{sum(s.doc_count for s in shards)}; encode this corpus with 'hybrid encode'")
    shutil.rmtree(work, ignore_errors=True)
    return merged_manifest(name, corpus_file, corpus_sha256, shards, folders, skipped)


def _encode(corpus_file: Path, out: Path, options: BuildOptions) -> VectorsManifest:
    """The corpus's vectors into ``out``: on the Ray cluster of ``options.ray``, else in this process."""
    if options.ray:
        from indexes.indexing.ray_build import encode_on_ray

        return encode_on_ray(corpus_file, out, options)
    return encode_corpus(corpus_file, out, options)


def encode_corpus(corpus: Path, out: Path, options: BuildOptions) -> VectorsManifest:
    """Encode ``corpus`` for every retriever of ``options`` that has a model, exactly as :func:`build_index`
    would (same document order, batches and quantization), into the folder ``out`` (``hybrid encode``).

    ``vectors.json`` is written last, so an interrupted export is never mistaken for a finished one.
    """
    corpus_file = resolve_corpus_file(Path(corpus))
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BuildError(f"{out} is not empty; give a new folder for the vectors")
    # Models only: encoding needs neither Lucene nor FAISS, so a GPU box without them can run it.
    retrievers = [(spec, RetrieverKind.resolve(get_kind(spec.kind), spec, options))
                  for spec in parse_retrievers(options.retrievers)]
    stage = BuildStage(options)
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".work"
    work.mkdir()
    try:
        store, _, _ = fill_store(corpus_file, work, options, stage)
        try:
            manifest = VectorsManifest(corpus_sha256=file_sha256(corpus_file), documents=len(store))
            for spec, model in retrievers:
                ctx = BuildContext(spec, model, store, work, work / spec.name, options, stage)
                found = get_kind(spec.kind).export(ctx, out)
                if found is not None:
                    manifest.sets[spec.name] = found
        finally:
            store.close()
        if not manifest.sets:
            raise BuildError("none of the retrievers encodes documents (BM25 indexes text); choose splade or dense")
        manifest.write(out)
        return manifest
    except BaseException:
        if not (out / VECTORS_MANIFEST).exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def create_empty_index(name: str, root: IndexRoot | str | Path, options: BuildOptions | None = None,
                       **overrides: Any) -> Manifest:
    """Publish an index with no documents, ready for live writes (``hybrid index add``, the API); ``options`` and
    ``overrides`` as for :func:`build_index`."""
    options = build_options(options, overrides)
    root = root if isinstance(root, IndexRoot) else IndexRoot(Path(root))
    validate_name(name)
    retrievers = resolve_retrievers(options)
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
            for spec, model in retrievers:
                manifest.retrievers[spec.name] = get_kind(spec.kind).create_empty(building / spec.name, spec, model, options)
            record_engine(manifest, building)
            manifest.docstore_bytes = folder_size(building / DocStore.FILE)
            manifest.files = {} if manifest.shards else checksum_files(building)  # shards record their own
            manifest.write(building)
            root.publish(name, building)
            return manifest
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise


__all__ = ["BuildError", "BuildOptions", "CorpusError", "build_index", "create_empty_index", "encode_corpus"]
