"""The hybrid searcher: opens an index folder, runs any subset of its retrievers, fuses the results.

This is the library API the service and the evaluation harness share, so both see exactly the
same rankings for the same request.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexes.docstore import DocStore
from indexes.manifest import Manifest, verify_files
from retrieval.fusion import FusedDoc, FusionConfig, RetrieverScore, ScoredDoc, fuse
from retrieval.jvm import JNI_LOCK
from retrieval.models import ModelError, ResolvedModel, resolve_model
from indexes.faiss_backend import FaissIndex
from indexes.lucene_backend import Bm25Index, ImpactIndex
from retrieval.dense_encoder import DenseEncoder
from retrieval.searchers import Bm25Searcher, DenseSearcher, RetrieverSearcher, SpladeSearcher
from retrieval.sparse_encoder import Quantization, SpladeEncoder


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_query(text: str) -> str:
    """Control characters become spaces: they carry no meaning for any retriever and upset tokenizers."""
    return _CONTROL.sub(" ", text)


class SearchError(ValueError):
    """A request the index cannot answer as asked; the message says what to fix."""


@dataclass
class Hit:
    id: str
    score: float
    rank: int
    title: str | None = None
    text: str | None = None
    metadata: dict[str, Any] | None = None
    explain: dict[str, RetrieverScore | None] | None = None


@dataclass
class SearchResult:
    hits: list[Hit]
    retrievers: list[str]
    took_ms: float
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class SearchRequest:
    k: int = 10
    retrievers: Sequence[str] | None = None
    fusion: FusionConfig = field(default_factory=FusionConfig)
    depth: int = 100
    explain: bool = False
    include_text: bool = False


def _check_model(manifest: Manifest, retriever: str) -> ResolvedModel:
    info = manifest.retrievers[retriever]
    assert info.model_id is not None
    model = resolve_model(info.model_id)
    if info.weights_sha256 and model.weights_sha256 != info.weights_sha256:
        raise ModelError(
            f"index {manifest.name!r}: the {retriever} model {info.model_id!r} has other weights than the ones "
            "the index was built with; rebuild the index or restore the model"
        )
    return model


_shared: dict[tuple[str, str, str], Any] = {}
_shared_lock = threading.Lock()


def shared_encoder(kind: str, model: ResolvedModel, device: str, role: str = "query") -> Any:
    """One loaded encoder per (kind, model, device, role) per process: indexes that share a model share its
    memory. An encoder serializes its own calls, so documents being encoded for a write (role "document")
    get their own copy: query encoding never waits behind a long document batch."""
    key = (kind, f"{model.path}:{model.weights_sha256}", device, role)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = SpladeEncoder(model, device=device) if kind == "splade" else DenseEncoder(model, device=device)
        return _shared[key]


@dataclass
class Encoders:
    """The query/document encoders an index needs, loaded once and shared by every view of it."""

    splade: SpladeEncoder | None = None
    quant: Quantization | None = None
    dense: DenseEncoder | None = None

    @classmethod
    def load(cls, manifest: Manifest, wanted: Sequence[str], device: str, role: str = "query") -> Encoders:
        encoders = cls()
        if "splade" in wanted:
            info = manifest.retrievers["splade"]
            encoders.splade = shared_encoder("splade", _check_model(manifest, "splade"), device, role)
            doc_top_k = info.parameters.get("doc_top_k")
            encoders.quant = Quantization(scale=float(info.parameters["scale"]), top_k=int(doc_top_k) if doc_top_k else None)
        if "dense" in wanted:
            encoders.dense = shared_encoder("dense", _check_model(manifest, "dense"), device, role)
        return encoders


def check_retrievers(manifest: Manifest, wanted: Sequence[str]) -> None:
    missing = [r for r in wanted if r not in manifest.retrievers]
    if missing:
        raise SearchError(f"index {manifest.name!r} has no {missing[0]!r} retriever; it has {', '.join(manifest.retrievers)}")


def build_searchers(folder: Path, manifest: Manifest, wanted: Sequence[str], encoders: Encoders, store: DocStore,
                    faiss: FaissIndex | None, batch_size: int, reader_for: Callable[[str], Any] | None = None,
                    bound: int | None = None, bitmap: Any = None) -> dict[str, RetrieverSearcher]:
    """One searcher per retriever in ``wanted``. ``reader_for(name)`` gives a live Lucene retriever its
    point-in-time reader (taken over by the searcher); ``bound``/``bitmap`` limit the dense docnos. On a
    failure, everything made so far, a reader not yet taken over included, is closed."""
    searchers: dict[str, RetrieverSearcher] = {}
    reader = None
    try:
        for name in wanted:
            info = manifest.retrievers[name]
            reader = reader_for(name) if reader_for is not None and name != "dense" else None
            if name == "bm25":
                searchers[name] = Bm25Searcher(Bm25Index(folder / name, k1=info.parameters["k1"], b=info.parameters["b"],
                                                         reader=reader))
            elif name == "splade":
                assert encoders.splade is not None and encoders.quant is not None
                searchers[name] = SpladeSearcher(ImpactIndex(folder / name, reader=reader), encoders.splade, encoders.quant,
                                                 batch_size)
            elif name == "dense":
                assert encoders.dense is not None and faiss is not None
                searchers[name] = DenseSearcher(faiss, encoders.dense, store, batch_size, bound=bound, bitmap=bitmap)
            reader = None  # handed over: the searcher closes it
    except BaseException:
        if reader is not None:
            with JNI_LOCK:
                reader.close()
        for searcher in searchers.values():
            searcher.close()
        raise
    return searchers


class Searcher:
    """Searches one index as of one point in time (``seq``; None for an index nobody writes to)."""

    def __init__(self, folder: Path, manifest: Manifest, store: DocStore, searchers: dict[str, RetrieverSearcher],
                 threads: int, seq: int | None = None, owns_store: bool = True) -> None:
        self.folder = folder
        self.manifest = manifest
        self.store = store
        self.searchers = searchers
        self.threads = threads
        self.seq = seq
        self._owns_store = owns_store

    @classmethod
    def open(cls, folder: Path, device: str = "cpu", batch_size: int = 32, threads: int = 2,
             retrievers: Sequence[str] | None = None, verify: str = "size") -> Searcher:
        """Open an index folder read-only; only ``retrievers`` (default: all the index has) are loaded.

        ``verify`` checks the files against the manifest first: "full" (sizes and sha256), "size", "off".
        After live writes this reads the index as of its last checkpoint; writes still only in its
        write-ahead log are seen through :class:`indexes.live.LiveIndex`, which replays them.
        """
        folder = Path(folder).resolve()
        manifest = Manifest.read(folder)
        verify_files(folder, manifest, verify)
        wanted = list(retrievers) if retrievers is not None else list(manifest.retrievers)
        check_retrievers(manifest, wanted)
        store = DocStore.open(folder)
        # After live writes, the files on disk hold the state of the last checkpoint (seq live_seq):
        # read the document store at that seq too, and hide dead vectors that FAISS still holds.
        seq = manifest.live_seq if manifest.live_seq else None
        bitmap = store.live_bitmap(manifest.live_seq) if store.has_versions() else None
        encoders = Encoders.load(manifest, wanted, device)
        faiss = FaissIndex(folder / "dense", device=device) if "dense" in wanted else None
        searchers = build_searchers(folder, manifest, wanted, encoders, store, faiss, batch_size, bitmap=bitmap)
        return cls(folder, manifest, store, searchers, threads, seq=seq)

    @property
    def retrievers(self) -> list[str]:
        return list(self.searchers)

    def _validate(self, queries: Sequence[str], request: SearchRequest) -> list[str]:
        if request.k < 1:
            raise SearchError(f"k must be >= 1, got {request.k}")
        if request.depth < 1:
            raise SearchError(f"depth must be >= 1, got {request.depth}")
        for i, query in enumerate(queries):
            if not isinstance(query, str) or not query.strip():
                raise SearchError(f"query {i} is empty; send some text to search for")
        names = list(request.retrievers) if request.retrievers else self.retrievers
        for name in names:
            if name not in self.searchers:
                raise SearchError(f"retriever {name!r} is not available in index {self.manifest.name!r}; "
                                  f"choose from {', '.join(self.retrievers)}")
        return list(dict.fromkeys(names))

    def search(self, query: str, k: int = 10, **options: Any) -> SearchResult:
        return self.batch_search([query], k=k, **options)[0]

    def batch_search(
        self,
        queries: Sequence[str],
        k: int = 10,
        retrievers: Sequence[str] | None = None,
        fusion: FusionConfig | None = None,
        depth: int = 100,
        explain: bool = False,
        include_text: bool = False,
    ) -> list[SearchResult]:
        request = SearchRequest(k, retrievers, fusion or FusionConfig(), depth, explain, include_text)
        queries = [clean_query(q) if isinstance(q, str) else q for q in queries]
        names = self._validate(queries, request)
        started = time.perf_counter()
        fusing = len(names) > 1
        per_retriever_depth = max(request.depth, request.k) if fusing else request.k
        runs: dict[str, list[list[ScoredDoc]]] = {}
        timings: dict[str, float] = {}
        for name in names:
            result = self.searchers[name].search(queries, per_retriever_depth, self.threads)
            runs[name] = result.runs
            timings[f"{name}_encode"] = result.encode_ms / len(queries)
            timings[f"{name}_search"] = result.search_ms / len(queries)
        fuse_started = time.perf_counter()
        fused_lists = [self._fuse({n: runs[n][q] for n in names}, request.fusion, fusing) for q in range(len(queries))]
        timings["fuse"] = (time.perf_counter() - fuse_started) * 1000.0 / len(queries)
        docs = self.store.get(list({d.doc_id for fl in fused_lists for d in fl[: request.k]}), self.seq) if include_text else {}
        took = (time.perf_counter() - started) * 1000.0 / len(queries)
        results = []
        for fused in fused_lists:
            hits = []
            for rank, doc in enumerate(fused[: request.k], start=1):
                hit = Hit(id=doc.doc_id, score=doc.score, rank=rank)
                if explain:
                    hit.explain = {n: doc.sources.get(n) for n in names}
                if include_text and doc.doc_id in docs:
                    stored = docs[doc.doc_id]
                    hit.title, hit.text, hit.metadata = stored.title, stored.text, stored.metadata
                hits.append(hit)
            results.append(SearchResult(hits=hits, retrievers=names, took_ms=took, timings_ms=dict(timings)))
        return results

    @staticmethod
    def _fuse(runs: Mapping[str, list[ScoredDoc]], config: FusionConfig, fusing: bool) -> list[FusedDoc]:
        if not fusing:
            (name, run), = runs.items()
            return [FusedDoc(d.doc_id, d.score, {name: RetrieverScore(i, d.score)}) for i, d in enumerate(run, start=1)]
        return fuse(runs, config)

    def close(self) -> None:
        for searcher in self.searchers.values():
            searcher.close()
        if self._owns_store:
            self.store.close()
