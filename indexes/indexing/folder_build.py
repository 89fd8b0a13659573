"""One index folder built from a corpus: the document store, then each retriever, then its manifest.

:mod:`indexes.indexing.builder` publishes such folders (one, or one per shard) atomically, and
:mod:`indexes.indexing.ray_build` runs :func:`build_shard` in Ray tasks; both import this module, which
imports neither of them.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from indexes.indexing.tuning import tune_folder, worst
from indexes.kinds import get_kind, parse_retrievers
from indexes.kinds.base import BuildContext, BuildStage
from indexes.storage.docstore.corpus import (
    CorpusError,
    Document,
    Skipped,
    file_sha256,
    iter_documents,
)
from indexes.storage.docstore.manifest import (
    Manifest,
    RetrieverManifest,
    checksum_files,
    folder_size,
)
from indexes.storage.docstore.store import DocStore
from indexes.storage.lucene.engine import created_major, runtime_engine
from indexes.storage.vectors.files import VectorSet, VectorsManifest
from retrieval.core.errors import HybridError
from retrieval.core.fields import FieldSchema
from retrieval.core.options import BuildOptions
from retrieval.core.types import RetrieverSpec
from retrieval.encoders.models import ResolvedModel, resolve_model


class BuildError(HybridError, ValueError):
    """Bad build options; the message says what to fix."""


def resolve_retrievers(options: BuildOptions) -> list[tuple[RetrieverSpec, ResolvedModel | None]]:
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


def with_vectors(retrievers: list[tuple[RetrieverSpec, ResolvedModel | None]], vectors: VectorsManifest | None
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


def build_folder(corpus_file: Path, name: str, building: Path, options: BuildOptions, stage: BuildStage,
                  retrievers: list[tuple[RetrieverSpec, ResolvedModel | None, VectorSet | None]],
                  vectors: Path | None = None, corpus_sha256: str | None = None, partial: bool = False,
                  queries: Path | None = None) -> Manifest:
    """One complete index in ``building`` (its manifest without file checksums, not yet written); ``partial``: the
    vectors cover more documents than this corpus (a shard's). Approximate searches are tuned last
    (:mod:`indexes.indexing.tuning`), on ``queries`` (a queries file) or sampled documents."""
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
    tune_folder(building, manifest, options, queries)
    stage("tuned")
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
    queries: Path | None = None  # for tuning (the whole corpus's queries file)


def build_shard(job: ShardJob, options: BuildOptions, stage: BuildStage) -> Manifest:
    """Build one shard as a complete index in ``job.folder`` (emptied first: a retried shard starts over) and write
    its manifest with its own checksums."""
    shutil.rmtree(job.folder, ignore_errors=True)
    job.folder.mkdir(parents=True)
    shard = build_folder(job.part, job.name, job.folder, options, stage, job.retrievers, job.vectors,
                          job.corpus_sha256, partial=True, queries=job.queries)
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
            index_seconds=round(sum(e.index_seconds for e in entries), 3), size_bytes=sum(e.size_bytes for e in entries),
            stages={k: round(sum(e.stages.get(k, 0.0) for e in entries), 3) for k in first.stages},
            search_tuning=worst([e.search_tuning for e in entries]))
    return Manifest(name=name, created=shards[0].created, corpus_path=str(corpus_file.resolve()),
                    corpus_sha256=corpus_sha256, doc_count=sum(s.doc_count for s in shards), retrievers=retrievers,
                    docstore_bytes=sum(s.docstore_bytes for s in shards), skipped=skipped.as_dict(),
                    engine=shards[0].engine, fields=schema.as_dict(), shards=folders)

