"""Builds on a Ray cluster (``hybrid index build --ray local|auto|ADDRESS``): Ray Data encodes, Ray tasks write shards.

The build is the in-process build with its two heavy steps handed to Ray, never to a scheduler of our own:

1. **Encoding.** The corpus is read once, as every build reads it, into a document store in the build folder.
   Its documents are cut into chunks at the boundaries an in-process build encodes them at
   (:func:`~indexes.kinds.base.build_chunk_for`), and a Ray Data ``map_batches`` over the chunk numbers runs an
   actor pool of :class:`ChunkEncoder` s (one GPU each where the cluster has GPUs and the device is CUDA, CPU
   actors otherwise). Each actor loads its models once and writes each chunk's vectors with the kinds' own
   ``export``, so a chunk's vectors are the ones the in-process build computes for it (same batches, same
   quantization). Ray Data retries a chunk whose actor died; the driver writes each chunk as its answer arrives,
   replacing any earlier copy, so a retried chunk never duplicates. The chunks are then joined, in order,
   into one vectors folder of the format ``hybrid encode`` writes.
2. **Writing.** Each shard is built from its part of those vectors by one Ray task (:func:`build_shard`):
   Lucene and FAISS run in that worker. A task whose worker dies is retried from an empty shard folder.

Everything lands in the private build folder and is published by the caller's one atomic rename, so the
previous version serves until the new one is complete, as in-process. **No path is shared between nodes**: an
encoder actor gets its chunk's documents in the Ray Data row and returns the chunk's vector files packed in its
answer; a shard task gets its documents and the vectors through the object store (the vectors put once, for every
task), builds in a temporary folder of its own node, and returns the shard packed (:mod:`shard_transfer`), which
the driver unpacks into the build folder and checks against the shard's manifest (sizes and SHA-256). Every node
needs this package and its models installed: Ray ships the calls and the data, not the code or the models.

Ray stays optional: it is imported here only, when ``--ray`` is given (``pip install 'hybrid-retrieval[ray]'``).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from indexes.indexing.folder_build import BuildError, ShardJob, build_shard, fill_store
from indexes.indexing.ray_cluster import connect, root_cause
from indexes.indexing.shard_transfer import pack, unpack
from indexes.kinds import get_kind, parse_retrievers
from indexes.kinds.base import BuildContext, BuildStage, RetrieverKind, build_chunk_for
from indexes.storage.docstore.corpus import Document, file_sha256
from indexes.storage.docstore.manifest import Manifest
from indexes.storage.docstore.store import DocStore
from indexes.storage.vectors.files import VectorSet, VectorsManifest
from retrieval.core.options import BuildOptions
from retrieval.core.types import RetrieverSpec
from retrieval.encoders.models import ResolvedModel

SETS_FILE = "sets.json"


def unwrapped(ray: Any, call: Any, what: str) -> Any:
    """``call()``, with an error raised inside a Ray worker re-raised as itself where it is a user error (a bad
    document, a missing model) and as one :class:`BuildError` line otherwise."""
    from retrieval.core.errors import HybridError

    try:
        return call()
    except Exception as exc:
        cause = root_cause(exc)
        if isinstance(cause, HybridError):
            raise cause from None
        if isinstance(exc, ray.exceptions.RayError) or cause is not exc:
            raise BuildError(f"{what} failed on the Ray cluster: {str(cause).splitlines()[0] if str(cause) else type(cause).__name__}") from None
        raise


def worker_options(options: BuildOptions) -> BuildOptions:
    """The options a Ray worker builds with: no progress bars or hooks of the driver's (they do not travel)."""
    return replace(options, progress=False, on_stage=None, on_progress=None, ray=None)


class DocumentSlice:
    """A chunk of the build's documents, read like the store a kind's ``export`` reads."""

    def __init__(self, docs: list[Document]) -> None:
        self.docs = docs

    def __len__(self) -> int:
        return len(self.docs)

    def iter_batches(self, batch_size: int) -> Iterator[list[Document]]:
        for start in range(0, len(self.docs), batch_size):
            yield self.docs[start : start + batch_size]

    def live_ids(self) -> list[str]:
        return [d.id for d in self.docs]


class ChunkEncoder:
    """A Ray Data actor: loads each retriever's document encoder once, then encodes whole chunks (their documents
    in the row) with the kinds' own ``export`` in a temporary folder of its node, and answers with the files."""

    def __init__(self, retrievers: list[tuple[RetrieverSpec, ResolvedModel]], options: BuildOptions) -> None:
        if options.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():  # an actor placed without a GPU
                options = replace(options, device="cpu")
        self.retrievers = retrievers
        self.options = options
        self.encoders = {spec.name: get_kind(spec.kind).document_encoder(model, options) for spec, model in retrievers}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        chunks = [pickle.loads(docs) for docs in batch["docs"]]
        packed, counts = [self.encode(docs) for docs in chunks], [len(docs) for docs in chunks]
        return {"chunk": np.asarray(batch["id"], dtype=np.int64), "documents": np.asarray(counts, dtype=np.int64),
                "files": np.asarray(packed, dtype=object)}

    def encode(self, docs: list[Document]) -> bytes:
        """The chunk's vector files, packed; written in this node's temporary space, removed after."""
        with tempfile.TemporaryDirectory(prefix="hybrid-chunk-") as tmp:
            partial = Path(tmp)
            self._export(docs, partial)
            return pack(partial, sorted(str(p.relative_to(partial)) for p in partial.rglob("*") if p.is_file()))

    def _export(self, docs: list[Document], partial: Path) -> None:
        stage = BuildStage(self.options)
        sets = {}
        for spec, model in self.retrievers:
            ctx = BuildContext(spec, model, DocumentSlice(docs), partial, partial / spec.name,  # type: ignore[arg-type]
                               self.options, stage, encoder=self.encoders[spec.name])
            found = get_kind(spec.kind).export(ctx, partial)
            if found is not None:
                sets[spec.name] = found.__dict__
        (partial / SETS_FILE).write_text(json.dumps(sets))


def cluster_workers(ray: Any, options: BuildOptions) -> tuple[int, float]:
    """(encoder actors, GPUs per actor): ``options.ray_workers``, or one per GPU (CUDA) or per CPU."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if options.device.startswith("cuda") else 0
    if options.device.startswith("cuda") and not gpus:
        raise BuildError("--device cuda with --ray: the Ray cluster has no GPUs; start its nodes on GPU machines "
                         "or build with --device cpu")
    workers = options.ray_workers or gpus or max(1, int(resources.get("CPU", 1)))
    # More actors than GPUs share them (Ray's fractional GPUs), e.g. two actors on one GPU.
    return workers, (min(1.0, gpus / workers) if gpus else 0.0)


def encode_on_ray(corpus_file: Path, out: Path, options: BuildOptions) -> VectorsManifest:
    """:func:`~indexes.indexing.builder.encode_corpus` with its encoding spread over a Ray Data actor pool; the
    same folder comes out (``vectors.json`` last)."""
    ray = connect(options.ray or "local")
    retrievers = [(spec, RetrieverKind.resolve(get_kind(spec.kind), spec, options))
                  for spec in parse_retrievers(options.retrievers)]
    encoding = [(spec, model) for spec, model in retrievers if model is not None]
    if not encoding:
        raise BuildError("none of the retrievers encodes documents (BM25 indexes text); nothing to run on Ray")
    out.mkdir(parents=True)
    work = out / ".work"
    work.mkdir()
    store, _, _ = fill_store(corpus_file, work, options, BuildStage(options))
    total = len(store)
    store.close()
    chunk = build_chunk_for(options.device, options.batch_size)
    chunks = (total + chunk - 1) // chunk
    workers, gpus = cluster_workers(ray, options)
    workers = min(workers, chunks)

    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = options.progress
    context.execution_options.preserve_order = True
    # The chunk numbers come from the driver (from_items, not a read task), so actors may take every CPU. One chunk
    # in flight per actor: otherwise the first actor up takes every queued chunk and the pool shrinks to it.
    # Each row carries its chunk's documents (no node reads the driver's files); each answer the chunk's files,
    # written into work/chunks as they arrive.
    store = DocStore.open(work)
    try:
        items = [{"id": i, "docs": pickle.dumps(store.read_range(i * chunk, chunk))} for i in range(chunks)]
    finally:
        store.close()
    dataset = ray.data.from_items(items, override_num_blocks=chunks).map_batches(
        ChunkEncoder, batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
        num_gpus=gpus, num_cpus=0 if gpus else 1,
        fn_constructor_kwargs={"retrievers": encoding, "options": worker_options(options)})
    del items
    done: dict[int, int] = {}

    def collect() -> None:
        for row in dataset.iter_rows():
            number = int(row["chunk"])
            target = work / "chunks" / f"{number:06d}"
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            _unpack_plain(row["files"], target)
            done[number] = int(row["documents"])

    unwrapped(ray, collect, "encoding")
    if sorted(done) != list(range(chunks)) or sum(done.values()) != total:
        raise BuildError(f"the Ray encoding returned {len(done)} of {chunks} chunks; run the build again")
    manifest = VectorsManifest(corpus_sha256=file_sha256(corpus_file), documents=total)
    manifest.sets = join_chunks([work / "chunks" / f"{i:06d}" for i in range(chunks)], out, total)
    shutil.rmtree(work, ignore_errors=True)
    manifest.write(out)
    return manifest


def _unpack_plain(data: bytes, target: Path) -> None:
    """A chunk's packed files (no manifest: vector files and sets.json) into ``target``."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(target, filter="data")


def join_chunks(folders: Sequence[Path], out: Path, total: int) -> dict[str, VectorSet]:
    """Each retriever's chunk files concatenated in chunk order: ``.npy`` rows into one array of ``total`` rows,
    every other (line-per-document) file end to end."""
    first = {name: VectorSet(**data) for name, data in json.loads((folders[0] / SETS_FILE).read_text()).items()}
    sets: dict[str, VectorSet] = {}
    for name, found in first.items():
        for file in found.files:
            if file.endswith(".npy"):
                from numpy.lib.format import open_memmap

                rows = [np.load(folder / file, mmap_mode="r") for folder in folders]
                joined = open_memmap(out / file, mode="w+", dtype=rows[0].dtype, shape=(total, rows[0].shape[1]))
                at = 0
                for part in rows:
                    joined[at : at + len(part)] = part
                    at += len(part)
                joined.flush()
                del joined
            else:
                with (out / file).open("wb") as target:
                    for folder in folders:
                        with (folder / file).open("rb") as source:
                            shutil.copyfileobj(source, target)
                    target.flush()
                    os.fsync(target.fileno())
        sets[name] = replace(found, count=total)
    return sets


def build_shards_on_ray(jobs: Sequence[ShardJob], options: BuildOptions) -> list[Manifest]:
    """Every shard built by its own Ray task (Lucene and FAISS in that worker), retried if its worker dies;
    the shards' manifests in shard order."""
    ray = connect(options.ray or "local")
    from tqdm import tqdm

    remote = ray.remote(num_cpus=1, max_retries=3)(_build_shard_task)
    quiet = worker_options(options)
    vectors = jobs[0].vectors
    # The vectors go into the object store once; each node running a shard task fetches them once.
    vectors_ref = ray.put(pack(vectors, sorted(str(p.relative_to(vectors)) for p in vectors.rglob("*")
                                               if p.is_file()))) if vectors is not None else None
    shipped = [ShippedShard(job, job.part.read_bytes(), [vectors_ref] if vectors_ref is not None else None)
               for job in jobs]
    pending = {remote.remote(ship, quiet): i for i, ship in enumerate(shipped)}
    results: dict[int, Manifest] = {}
    with tqdm(total=len(jobs), desc="shards", unit="shard", disable=not options.progress) as bar:
        waiting = list(pending)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            for ref in ready:
                i = pending[ref]
                _, packed = unwrapped(ray, lambda: ray.get(ref), f"shard {i}")
                shutil.rmtree(jobs[i].folder, ignore_errors=True)
                jobs[i].folder.parent.mkdir(parents=True, exist_ok=True)
                results[i] = unpack(packed, jobs[i].folder)  # checked against the shard's own manifest
                bar.update(1)
                if options.on_stage:
                    options.on_stage(f"shard-{i}")
    return [results[i] for i in range(len(jobs))]


@dataclass
class ShippedShard:
    """A shard's build inputs as data: its documents (a JSONL file's bytes) and the vectors (packed, behind a Ray
    object reference in a list, fetched by the task). ``job`` names the driver's folders; the task opens none."""

    job: ShardJob
    part: bytes
    vectors: list[Any] | None

    @property
    def folder(self) -> Path:
        return self.job.folder


def _build_shard_task(shipped: ShippedShard, options: BuildOptions) -> tuple[Manifest, bytes]:
    """One shard, built by a Ray worker in a temporary folder of its own node and returned packed (looked up by
    :func:`build_shards_on_ray` when it runs)."""
    import ray

    with tempfile.TemporaryDirectory(prefix="hybrid-shard-build-") as tmp:
        local = Path(tmp)
        part = local / "part.jsonl"
        part.write_bytes(shipped.part)
        vectors = None
        if shipped.vectors is not None:
            vectors = local / "vectors"
            _unpack_plain(ray.get(shipped.vectors[0]), vectors)
        job = replace(shipped.job, part=part, folder=local / "shard", vectors=vectors)
        manifest = build_shard(job, options, BuildStage(options))
        return manifest, pack(job.folder)
