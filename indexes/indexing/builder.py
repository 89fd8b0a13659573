"""Batch index builds: corpus -> document store -> each chosen retriever -> manifest -> publish.

Everything is written into a private build folder and published with one atomic rename
(see :mod:`indexes.storage.layout`), so a failed, interrupted or killed build never touches the live index.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from indexes.kinds import get_kind, parse_retrievers
from indexes.kinds.base import BuildContext, BuildStage, RetrieverKind
from indexes.storage.corpus import CorpusError, Document, Skipped, file_sha256, iter_documents, resolve_corpus_file
from indexes.storage.docstore import DocStore
from indexes.storage.engine import created_major, runtime_engine
from indexes.storage.layout import IndexRoot, validate_name
from indexes.storage.manifest import Manifest, RetrieverManifest, checksum_files, folder_size
from indexes.storage.shards import shard_folder, shard_of
from indexes.storage.vector_files import VECTORS_MANIFEST, VectorSet, VectorsManifest
from retrieval.core.errors import HybridError
from retrieval.core.fields import FieldSchema
from retrieval.core.options import BuildOptions
from retrieval.core.types import RetrieverSpec
from retrieval.encoders.models import ResolvedModel, resolve_model


class BuildError(HybridError, ValueError):
    """Bad build options; the message says what to fix."""


def _resolve(options: BuildOptions) -> list[tuple[RetrieverSpec, ResolvedModel | None]]:
    """Each retriever with its model, resolved before any work starts: a missing model fails in seconds."""
    return [(spec, get_kind(spec.kind).resolve(spec, options)) for spec in parse_retrievers(options.retrievers)]


def record_engine(manifest: Manifest, building: Path) -> None:
    """Record which Lucene wrote each Lucene retriever, so a newer-Lucene index is refused on open."""
    lucene = [name for name in manifest.retrievers if any((building / name).glob("segments_*"))]
    for name in lucene:
        manifest.retrievers[name].lucene_major = created_major(building / name)
    if lucene:
        manifest.engine = runtime_engine()


def fill_store(corpus_file: Path, folder: Path, options: BuildOptions, stage: BuildStage
               ) -> tuple[DocStore, Skipped, FieldSchema]:
    """A document store in ``folder`` holding the corpus as every retriever indexes it (bad lines per
    ``options.on_error``, empty documents left out), in corpus order, and the types of its metadata fields."""
    store = DocStore.create(folder)
    skipped = Skipped()
    schema = FieldSchema()
    with stage.bar(None, "read corpus") as bar:
        def kept() -> Iterator[Document]:
            for doc in iter_documents(corpus_file, options.on_error, skipped):
                bar.update(1)
                if not doc.contents.strip():
                    # Lucene cannot index an empty document; leave it out of every retriever alike.
                    skipped.add("empty", doc.id)
                    continue
                if doc.metadata:
                    schema.observe([doc.metadata])
                yield doc

        store.add(kept())
    if not len(store):
        store.close()
        raise CorpusError(f"{corpus_file}: every document is empty (no title and no text)")
    for reason, count in skipped.counts.items():
        examples = skipped.examples[reason]
        print(f"warning: skipped {count} document(s), {reason}: {', '.join(examples[:10])}"
              f"{' ...' if count > 10 else ''}", file=sys.stderr)
    stage("docstore")
    return store, skipped, schema


def _with_vectors(retrievers: list[tuple[RetrieverSpec, ResolvedModel | None]], vectors: VectorsManifest | None
                  ) -> list[tuple[RetrieverSpec, ResolvedModel | None, VectorSet | None]]:
    """Each retriever with the pre-encoded vector set of its name, if any, and the model that made it, whose
    weights must be the ones installed here (queries are encoded here)."""
    out: list[tuple[RetrieverSpec, ResolvedModel | None, VectorSet | None]] = []
    for spec, model in retrievers:
        found = vectors.sets.get(spec.name) if vectors is not None else None
        if found is None:
            out.append((spec, model, None))
            continue
        if found.kind != spec.kind:
            raise BuildError(f"vectors {spec.name!r} are of kind {found.kind!r}, the retriever is {spec.kind!r}")
        if spec.model and resolve_model(spec.model).model_id != found.model_id:
            raise BuildError(f"vectors {spec.name!r} were made with {found.model_id!r}, not {spec.model!r}")
        made_with = resolve_model(found.model_id)
        if made_with.weights_sha256 != found.weights_sha256:
            raise BuildError(f"vectors {spec.name!r} were made with other weights of {found.model_id!r} "
                             f"({found.weights_sha256[:12]}...) than the ones installed here "
                             f"({made_with.weights_sha256[:12]}...): queries would not match; re-encode or "
                             "install the same model")
        out.append((spec, made_with, found))
    if vectors is not None:
        unused = sorted(set(vectors.sets) - {spec.name for spec, _ in retrievers})
        if unused:
            print(f"warning: vectors for {', '.join(unused)} are not used: no retriever of that name is built",
                  file=sys.stderr)
    return out


def build_index(corpus: Path, name: str, root: IndexRoot, options: BuildOptions, vectors: Path | None = None
                ) -> Manifest:
    """Build ``name`` from ``corpus`` and publish it atomically; returns its manifest.

    ``vectors`` is a folder from ``hybrid encode`` (:func:`encode_corpus`): retrievers with vectors there are
    indexed from them instead of being encoded; they must cover exactly the corpus's documents.
    ``options.shards`` > 1 builds one complete index per shard (:mod:`indexes.storage.shards`), published together.
    """
    validate_name(name)
    corpus_file = resolve_corpus_file(Path(corpus))
    if options.shards < 1:
        raise BuildError(f"shards must be at least 1, got {options.shards}")
    vector_manifest = VectorsManifest.read(Path(vectors)) if vectors is not None else None
    retrievers = _with_vectors(_resolve(options), vector_manifest)
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
                    retrievers = _with_vectors(_resolve(options), _encode(corpus_file, vectors, options))
                manifest = _build_folder(corpus_file, name, building, options, stage, retrievers, vectors)
            manifest.files = {} if manifest.shards else checksum_files(building)  # shards record their own
            manifest.write(building)
            stage("manifest")
            root.publish(name, building, on_renamed=lambda: stage("renamed"))
            stage("published")
            return manifest
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise


def _build_folder(corpus_file: Path, name: str, building: Path, options: BuildOptions, stage: BuildStage,
                  retrievers: list[tuple[RetrieverSpec, ResolvedModel | None, VectorSet | None]],
                  vectors: Path | None = None, corpus_sha256: str | None = None, partial: bool = False) -> Manifest:
    """One complete index in ``building`` (its manifest without file checksums, not yet written); ``partial``: the
    vectors cover more documents than this corpus (a shard's)."""
    work = building / ".work"
    store, skipped, schema = fill_store(corpus_file, building, options, stage)
    manifest = Manifest(
        name=name,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        corpus_path=str(corpus_file.resolve()),
        corpus_sha256=corpus_sha256 or file_sha256(corpus_file),
        doc_count=len(store),
        skipped=skipped.as_dict(),
        fields=schema.as_dict(),
    )
    try:
        ids: list[str] | None = None

        def build_one(spec: RetrieverSpec, model: ResolvedModel | None, vector_set: VectorSet | None
                      ) -> RetrieverManifest:
            nonlocal ids
            kind = get_kind(spec.kind)
            ctx = BuildContext(spec, model, store, work, building / spec.name, options, stage, fields=schema)
            if vector_set is not None:
                assert vectors is not None
                ids = ids if ids is not None else store.live_ids()
                ctx.vector_set, ctx.vectors = vector_set, kind.read_vectors(Path(vectors), vector_set, ids, partial)
            return kind.build(ctx)

        started = time.perf_counter()
        beside = overlapped(options, retrievers)
        built: dict[str, RetrieverManifest] = {}
        with ThreadPoolExecutor(1, thread_name_prefix="lucene-beside") as pool:
            # Retrievers that encode nothing (BM25) build on the CPU while the others encode on the GPU.
            futures = {spec.name: pool.submit(build_one, spec, model, vs) for spec, model, vs in beside}
            for spec, model, vector_set in retrievers:
                if spec.name not in futures:
                    built[spec.name] = build_one(spec, model, vector_set)
            built.update({name: future.result() for name, future in futures.items()})
        manifest.retrievers = {spec.name: built[spec.name] for spec, _, _ in retrievers}
        manifest.build_wall_seconds = round(time.perf_counter() - started, 3)
    finally:
        store.close()
    shutil.rmtree(work, ignore_errors=True)
    record_engine(manifest, building)
    manifest.docstore_bytes = folder_size(building / DocStore.FILE)
    return manifest


def overlapped(options: BuildOptions, retrievers: list[tuple[RetrieverSpec, ResolvedModel | None, VectorSet | None]]
               ) -> list[tuple[RetrieverSpec, ResolvedModel | None, VectorSet | None]]:
    """The retrievers that build beside the others (issue 12, item 2): those that encode nothing (no model, no
    pre-encoded vectors: BM25), when some other retriever encodes, on CUDA (``overlap_builds="auto"``) or always
    (``"on"``). On the CPU the encoders already use every core, so ``auto`` keeps one build at a time there."""
    mode = options.overlap_builds
    if mode == "off" or (mode == "auto" and options.device != "cuda"):
        return []
    plain = [r for r in retrievers if r[1] is None and r[2] is None]
    encoding = [r for r in retrievers if r[1] is not None and r[2] is None]
    return plain if encoding else []


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
    if vectors is None and any(model is not None for _, model in _resolve(options)):
        vectors = work / "vectors"
        _encode(corpus_file, vectors, options)
    vector_manifest = VectorsManifest.read(vectors) if vectors is not None else None
    retrievers = _with_vectors(_resolve(options), vector_manifest)
    corpus_sha256 = file_sha256(corpus_file)
    jobs = [ShardJob(part, name, shard_folder(building, i), corpus_file.resolve(), corpus_sha256, retrievers, vectors)
            for i, part in enumerate(parts)]
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


@dataclass
class ShardJob:
    """What one shard's build needs: plain data, so that it can be sent to a Ray worker."""

    part: Path  # the shard's documents, a corpus file
    name: str
    folder: Path
    corpus_file: Path
    corpus_sha256: str
    retrievers: list[tuple[RetrieverSpec, ResolvedModel | None, VectorSet | None]]
    vectors: Path | None


def build_shard(job: ShardJob, options: BuildOptions, stage: BuildStage) -> Manifest:
    """Build one shard as a complete index in ``job.folder`` (emptied first: a retried shard starts over) and write
    its manifest with its own checksums."""
    shutil.rmtree(job.folder, ignore_errors=True)
    job.folder.mkdir(parents=True)
    shard = _build_folder(job.part, job.name, job.folder, options, stage, job.retrievers, job.vectors,
                          job.corpus_sha256, partial=True)
    shard.corpus_path = str(job.corpus_file)
    shard.files = checksum_files(job.folder)
    shard.write(job.folder)
    return shard


def merged_manifest(name: str, corpus_file: Path, corpus_sha256: str, shards: list[Manifest], folders: list[str],
                    skipped: Skipped) -> Manifest:
    """The manifest of a sharded index: counts and sizes summed, field types widened over the shards."""
    schema = FieldSchema.union(shard.fields for shard in shards)
    for shard in shards:
        for reason, info in shard.skipped.items():  # empty documents are found per shard
            for example in info["examples"]:
                skipped.add(reason, example)
            skipped.counts[reason] += info["count"] - len(info["examples"])
    retrievers = {}
    for retriever, first in shards[0].retrievers.items():
        entries = [s.retrievers[retriever] for s in shards]
        retrievers[retriever] = replace(
            first, build_seconds=round(sum(e.build_seconds for e in entries), 3),
            encode_seconds=round(sum(e.encode_seconds for e in entries), 3),
            index_seconds=round(sum(e.index_seconds for e in entries), 3), size_bytes=sum(e.size_bytes for e in entries))
    return Manifest(name=name, created=shards[0].created, corpus_path=str(corpus_file.resolve()),
                    corpus_sha256=corpus_sha256, doc_count=sum(s.doc_count for s in shards), retrievers=retrievers,
                    docstore_bytes=sum(s.docstore_bytes for s in shards), skipped=skipped.as_dict(),
                    engine=shards[0].engine, fields=schema.as_dict(), shards=folders)


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


def create_empty_index(name: str, root: IndexRoot, options: BuildOptions) -> Manifest:
    """Publish an index with no documents, ready for live writes (``hybrid index add``, the API)."""
    validate_name(name)
    retrievers = _resolve(options)
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
