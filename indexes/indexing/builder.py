"""Batch index builds: corpus -> document store -> each chosen retriever -> manifest -> publish.

Everything is written into a private build folder and published with one atomic rename
(see :mod:`indexes.storage.layout`), so a failed, interrupted or killed build never touches the live index.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from indexes.kinds import get_kind, parse_retrievers
from indexes.kinds.base import BuildContext, BuildStage
from indexes.storage.corpus import CorpusError, Document, Skipped, file_sha256, iter_documents, resolve_corpus_file
from indexes.storage.docstore import DocStore
from indexes.storage.engine import created_major, runtime_engine
from indexes.storage.layout import IndexRoot, validate_name
from indexes.storage.manifest import Manifest, checksum_files, folder_size
from retrieval.core.errors import HybridError
from retrieval.core.options import BuildOptions
from retrieval.core.types import RetrieverSpec
from retrieval.encoders.models import ResolvedModel


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


def build_index(corpus: Path, name: str, root: IndexRoot, options: BuildOptions) -> Manifest:
    """Build ``name`` from ``corpus`` and publish it atomically; returns its manifest."""
    validate_name(name)
    corpus_file = resolve_corpus_file(Path(corpus))
    retrievers = _resolve(options)
    stage = BuildStage(options)
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
            for spec, model in retrievers:
                ctx = BuildContext(spec, model, store, work, building / spec.name, options, stage)
                manifest.retrievers[spec.name] = get_kind(spec.kind).build(ctx)
            store.close()
            shutil.rmtree(work, ignore_errors=True)
            record_engine(manifest, building)
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
            manifest.files = checksum_files(building)
            manifest.write(building)
            root.publish(name, building)
            return manifest
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise


__all__ = ["BuildError", "BuildOptions", "CorpusError", "build_index", "create_empty_index"]
