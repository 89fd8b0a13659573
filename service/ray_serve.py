"""``hybrid serve --ray``: the same REST API (same routes, same schemas) as a Ray Serve application.

Deployments, per index of the index root:

* ``NAME-shard-NNN`` (:class:`ShardServer`), one per shard (an unsharded index is one shard): the shard's
  files open in the replica, searched with query vectors it is given. ``--replicas`` replicas each. With
  one replica a shard is a :class:`~indexes.indexing.live.LiveIndex` and takes upserts and deletes (its
  own write-ahead log, replayed if the replica died); with more, each replica opens the shard read-only as
  of its last checkpoint and writes are refused, because Ray Serve routes a call to any replica and two
  writers cannot share one Lucene index.
* ``NAME-encoder`` (:class:`QueryEncoder`): the query encoders, ``--encoder-replicas`` replicas, one GPU
  each with ``--device cuda``. A query is encoded once here for all shards.

and one ingress (:class:`Ingress`, ``--workers`` replicas): the FastAPI app of :func:`service.app.create_app`
whose registry holds :class:`~indexes.indexing.remote.RemoteShardedIndex` es: each request is scattered to the
shards, gathered, merged by score and fused exactly as in one process (see that module for what remote shards
change: BM25's statistics are per shard).

Ray Serve restarts a replica that dies (its controller health-checks every replica); autoscaling is Ray
Serve's own (``autoscaling_config`` in a Serve config file; README "Scale-out"). Ray is imported only here.

**Nodes that share no disk** (``--shards-from``, docs/ray.md): a shard replica then fetches its shard onto its own
node, from the Ray object store (the serving driver puts each shard there, packed, once) or from a URI that
``pyarrow.fs`` opens (``s3://bucket/indexes``: the index root's layout, ``NAME/shards/NNN/...``), checks every
file against the shard's manifest (size and SHA-256), and serves it read-only as of its last checkpoint (writes
would live on one node only: they are refused, 409). The replicas of one shard go to different nodes
(``max_replicas_per_node=1`` where the cluster has enough nodes), the ingress (and the query encoders on the CPU)
to the head node with Serve's HTTP proxy, and a call to a replica that died with its node is sent again to
another: losing a worker node loses no search while another replica of each shard lives.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from indexes.indexing.live import LiveIndex, WriteResult
from indexes.indexing.ray_cluster import ClusterError, connect, root_cause
from indexes.indexing.remote import RemoteIndexError, RemoteShardedIndex, ShardState
from indexes.indexing.shard_transfer import ShardSource, pack
from indexes.kinds import get_kind
from indexes.kinds.base import RetrieverRuns, onnx_cache_for
from indexes.storage.docstore.corpus import Document
from indexes.storage.docstore.layout import IndexRoot
from indexes.storage.docstore.manifest import Manifest
from retrieval.core.errors import HybridError
from retrieval.core.filters import Filter
from retrieval.core.options import OpenOptions
from retrieval.core.settings import Settings
from retrieval.core.types import Encoded, PrfConfig
from retrieval.search.pipeline import Searcher
from service.registry import Registry

APP_NAME = "hybrid"


def use_threads(options: OpenOptions) -> None:
    """Ray starts an actor with one math thread (``OMP_NUM_THREADS=1``); a replica computes with the threads a
    search process is given, so its query vectors are bit for bit the ones ``hybrid serve`` computes."""
    import torch

    torch.set_num_threads(max(1, options.threads))


class ReadOnlyShard:
    """A shard opened read-only as of its last checkpoint (one of several replicas)."""

    def __init__(self, folder: Path, options: OpenOptions) -> None:
        self.searcher = Searcher.open(folder, options)
        self.manifest = self.searcher.manifest
        self.seq = 0
        self.doc_count = self.manifest.doc_count

    @contextmanager
    def view(self) -> Iterator[Searcher]:
        yield self.searcher

    def close(self, checkpoint: bool = False) -> None:
        self.searcher.close()


class ShardServer:
    """One shard in a Ray Serve replica (see the module docstring): ``folder`` is a path every node sees, or a
    :class:`ShardSource` to fetch the shard from onto this node (then read-only)."""

    def __init__(self, folder: str | ShardSource, options: OpenOptions, writable: bool) -> None:
        use_threads(options)
        self.fetched: Path | None = None
        if isinstance(folder, ShardSource):
            import ray

            self.fetched = folder.fetch(ray.get)  # checked against its manifest before it opens
            folder, writable = str(self.fetched), False
        self.writable = writable
        self.index: LiveIndex | ReadOnlyShard = (LiveIndex.open(Path(folder), options) if writable
                                                 else ReadOnlyShard(Path(folder), options))

    def search(self, retriever: str, queries: Sequence[str], depth: int, threads: int, prf: PrfConfig | None,
               mode: str | None, given: Sequence[Any] | None, where: Filter | None, exact: bool = False
               ) -> RetrieverRuns:
        with self.index.view() as searcher:
            return searcher.searchers[retriever].search(queries, depth, threads, prf, mode, given, where, exact)

    def get(self, ids: Sequence[str]) -> dict[str, Document]:
        with self.index.view() as searcher:
            return searcher.store.get(list(ids), searcher.seq)

    def state(self) -> ShardState:
        return ShardState(self.index.manifest, self.index.seq, self.index.doc_count)

    def _live(self) -> LiveIndex:
        if self.fetched is not None:
            raise RemoteIndexError("this index's shards were copied onto the nodes that serve them (--shards-from): "
                                   "a write would live on one node only; write where the index is built, then "
                                   "serve it again")
        if not isinstance(self.index, LiveIndex):
            raise RemoteIndexError("this index is served on Ray with several replicas per shard, read-only; serve "
                                   "it with --replicas 1 to write to it")
        return self.index

    def upsert(self, docs: Sequence[Document]) -> WriteResult:
        return self._live().upsert(docs)

    def delete(self, ids: Sequence[str]) -> WriteResult:
        return self._live().delete(ids)

    def checkpoint(self) -> None:
        if isinstance(self.index, LiveIndex):
            self.index.checkpoint()

    def __del__(self) -> None:
        """A replica shut down gracefully checkpoints its shard (a killed one replays its log when it comes back)."""
        index = getattr(self, "index", None)
        if index is not None:
            index.close(checkpoint=self.writable)
        if getattr(self, "fetched", None) is not None:
            shutil.rmtree(self.fetched, ignore_errors=True)


class QueryEncoder:
    """The query encoders of one index, each loaded once."""

    def __init__(self, folder: str, options: OpenOptions, manifest: Manifest | None = None) -> None:
        use_threads(options)
        local = Path(folder).is_dir()  # on a node without the index root: the manifest it was given, a local cache
        self.manifest = Manifest.read(Path(folder)) if local or manifest is None else manifest
        self.options = options
        self.onnx_cache = onnx_cache_for(Path(folder) if local else Path(tempfile.mkdtemp(prefix="hybrid-onnx-")))
        self.encoders = {name: get_kind(entry.kind).load_encoder(self.manifest, name, options.device)
                         for name, entry in self.manifest.retrievers.items()}

    def encode(self, retriever: str, queries: Sequence[str], mode: str | None) -> Encoded | None:
        entry = self.manifest.retrievers[retriever]
        encoder = self.encoders[retriever]
        if encoder is None:
            return None
        return get_kind(entry.kind).encode_queries(encoder, entry, queries, mode, self.options.batch_size,
                                                   self.onnx_cache)


READS = frozenset({"search", "get", "state", "encode"})  # safe to send again to another replica
RETRIES = 8


class HandleCall:
    """A call in flight to a deployment; ``result()`` re-raises a user error from the replica as itself, and sends
    a read again (to another replica, after a short wait) when its replica died under it, as with its node."""

    def __init__(self, send: Any, idempotent: bool) -> None:
        self.send = send
        self.idempotent = idempotent
        self.response = send()

    def result(self) -> Any:
        import ray

        for attempt in range(RETRIES + 1):
            try:
                return self.response.result()
            except Exception as exc:
                cause = root_cause(exc)
                if isinstance(cause, HybridError):
                    raise cause from None
                gone = isinstance(exc, (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)) or \
                    isinstance(cause, (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError))
                if not (gone and self.idempotent) or attempt == RETRIES:
                    raise
                time.sleep(min(2.0, 0.1 * 2**attempt))  # the router learns of the dead replica meanwhile
                self.response = self.send()
        raise AssertionError("unreachable")


class ShardHandle:
    """:class:`~indexes.indexing.remote.ShardClient` over a Ray Serve deployment handle."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def __getattr__(self, method: str) -> Any:
        target = getattr(self.handle, method)
        return lambda *args: HandleCall(lambda: target.remote(*args), method in READS)


class RayRegistry(Registry):
    """The registry of the ingress: each index is a :class:`RemoteShardedIndex` over its deployments."""

    def __init__(self, settings: Settings, shards: dict[str, list[Any]], encoders: dict[str, Any]) -> None:
        super().__init__(settings)
        self.shard_handles = shards
        self.encoder_handles = encoders

    def load_all(self) -> None:
        for name in sorted(self.shard_handles):
            try:
                self.reload(name)
            except Exception as exc:
                self.failed[name] = str(exc)
        self.ready = True

    def _open(self, name: str) -> Any:
        if name not in self.shard_handles:
            raise RemoteIndexError(f"index {name!r} has no deployments in this Ray application; run 'hybrid serve "
                                   "--ray' again to deploy the indexes of the index root")
        index = RemoteShardedIndex(self.root.resolve(name), name, [ShardHandle(h) for h in self.shard_handles[name]],
                                   ShardHandle(self.encoder_handles[name]), self.options)
        with index.view() as searcher:
            searcher.search("warm up", k=1)
        return index


class Ingress:
    """The REST API, in a Ray Serve replica; the FastAPI app is built after the constructor
    (``__serve_build_asgi_app__``), so that it holds this replica's registry."""

    def __init__(self, settings: dict[str, Any], shards: dict[str, list[Any]], encoders: dict[str, Any]) -> None:
        self.settings = Settings(**settings)
        self.registry = RayRegistry(self.settings, shards, encoders)

    def __serve_build_asgi_app__(self) -> Any:
        from service.app import create_app

        return create_app(self.settings, registry=self.registry)


HEAD = {"node:__internal_head__": 0.001}  # Ray's resource of the head node: where Serve's HTTP proxy takes requests


def shard_sources(shards_from: str, name: str, folders: Sequence[Path], root: Path) -> list[str | ShardSource]:
    """What each shard replica opens: the folder itself (``path``: a disk every node sees), the shard packed into
    the object store (``object-store``), or the shard's folder under a URI mirroring the index root."""
    if shards_from == "path":
        return [str(folder) for folder in folders]
    if shards_from == "object-store":
        import ray

        return [ShardSource(f"{name}-{i:03d}", packed=[ray.put(pack(folder))]) for i, folder in enumerate(folders)]
    base = f"{shards_from.rstrip('/')}/{name}"
    index_folder = (root / name).resolve()
    return [ShardSource(f"{name}-{i:03d}", uri=f"{base}/{folder.relative_to(index_folder)}".rstrip("/."))
            for i, folder in enumerate(folders)]


def resolved_source(shards_from: str) -> str:
    """``auto``: the folders where the cluster is this one machine, the object store where it has other nodes."""
    if shards_from != "auto":
        return shards_from
    import ray

    return "path" if len([n for n in ray.nodes() if n.get("Alive")]) <= 1 else "object-store"


def application(settings: Settings, replicas: int = 1, encoder_replicas: int = 1,
                indexes: Sequence[str] | None = None, shards_from: str = "path") -> Any:
    """The Ray Serve application for the indexes of ``settings.index_root`` (``indexes``: only these);
    ``shards_from`` as for :func:`shard_sources`."""
    import ray
    from ray import serve

    root = IndexRoot(settings.index_root)
    names = [n for n in root.names() if indexes is None or n in indexes]
    if not names:
        raise ClusterError(f"no indexes to serve in {root.root}; build one with 'hybrid index build' first")
    options = OpenOptions.from_settings(settings)
    gpu = 1 if options.device.startswith("cuda") else 0
    shard = serve.deployment(ShardServer)
    encoder = serve.deployment(QueryEncoder)
    ingress = serve.deployment(serve.ingress()(Ingress))
    # One replica of a shard a node, where there are enough nodes: a node that goes takes one replica of each.
    spread = {"max_replicas_per_node": 1} if 1 < replicas <= len([n for n in ray.nodes() if n.get("Alive")]) else {}
    shards: dict[str, list[Any]] = {}
    encoders: dict[str, Any] = {}
    for name in names:
        folder = root.resolve(name)
        manifest = Manifest.read(folder)
        folders = [folder / rel for rel in manifest.shards] or [folder]
        sources = shard_sources(shards_from, name, folders, Path(settings.index_root))
        shards[name] = [shard.options(name=f"{name}-shard-{i:03d}", num_replicas=replicas,
                                      ray_actor_options={"num_cpus": 0}, health_check_period_s=2, **spread)
                        .bind(source, options, replicas == 1) for i, source in enumerate(sources)]
        # On the CPU, the query encoders stay with the ingress on the head; on CUDA they go where the GPUs are.
        front = {} if gpu else {"resources": HEAD}
        encoders[name] = encoder.options(name=f"{name}-encoder", num_replicas=encoder_replicas,
                                         ray_actor_options={"num_cpus": 0, "num_gpus": gpu, **front}
                                         ).bind(str(folder), options, manifest)
    # Writes are the shards' to serialize, so every ingress replica may take them (workers=1 inside each).
    dumped = {**settings.model_dump(mode="json"), "workers": 1}
    return ingress.options(name="ingress", num_replicas=settings.workers,
                           ray_actor_options={"num_cpus": 0, "resources": HEAD}).bind(dumped, shards, encoders)


def from_config(args: dict[str, Any]) -> Any:
    """The application for a Ray Serve config file (``import_path: service.ray_serve:from_config``): ``args`` may
    hold ``settings`` (Settings fields), ``replicas``, ``encoder_replicas`` and ``indexes``; the file's
    ``deployments`` section then overrides any deployment by name (``autoscaling_config``, resources)."""
    return application(Settings(**args.get("settings", {})), int(args.get("replicas", 1)),
                       int(args.get("encoder_replicas", 1)), args.get("indexes"),
                       resolved_source(str(args.get("shards_from", "auto"))))


def serve_on_ray(settings: Settings, address: str, replicas: int = 1, encoder_replicas: int = 1,
                 blocking: bool = True, indexes: Sequence[str] | None = None, shards_from: str = "auto") -> Any:
    """Deploy :func:`application` on the cluster at ``address`` with Ray Serve's HTTP proxy on the head node, at
    the settings' host and port; returns the ingress handle (``blocking``: serves until interrupted)."""
    connect(address)
    from ray import serve

    app = application(settings, replicas, encoder_replicas, indexes, resolved_source(shards_from))
    serve.start(proxy_location="HeadOnly", http_options={"host": settings.host, "port": settings.port})
    if not blocking:
        return serve.run(app, name=APP_NAME, route_prefix="/")
    try:
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=True)
    except KeyboardInterrupt:  # Ctrl-C: shut the replicas down gracefully (each writable shard checkpoints)
        serve.shutdown()
    return None
