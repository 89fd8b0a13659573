"""The retriever-kind interface: what one kind of retriever knows, behind one registry.

A kind (BM25 and learned sparse on Lucene, dense on FAISS) is one module with one
:class:`RetrieverKind` subclass. Builds, live writes and searches never ask which kind they hold:
they call these methods, so adding a kind means adding one module and one registry entry
(:mod:`indexes.kinds`). An index holds *named* retrievers, each of one kind, in ``folder/NAME``.

Per index folder a kind opens a :class:`Component`: the retriever's files, open for searching and,
once a live write arrives, for writing. Live writes reach every component in the same order
(``upsert``/``delete`` with the write's ``seq``), and a checkpoint asks each to merge, compact and
commit; the crash-safety rules themselves live in :mod:`indexes.indexing.live`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from tqdm import tqdm

from indexes.storage.docstore.corpus import Document
from indexes.storage.docstore.layout import VERSIONS
from indexes.storage.docstore.manifest import Manifest, RetrieverManifest
from indexes.storage.docstore.shards import SHARDS_DIR
from indexes.storage.docstore.store import DocStore
from indexes.storage.vectors.files import VectorSet
from retrieval.core.errors import HybridError
from retrieval.core.fields import FieldSchema
from retrieval.core.filters import Filter
from retrieval.core.options import BuildOptions, OpenOptions
from retrieval.core.types import (
    PRF_FIELDS,
    Encoded,
    PrfConfig,
    RetrieverSpec,
    ScoredDoc,
)
from retrieval.encoders.models import ModelError, ResolvedModel, resolve_model
from retrieval.encoders.onnx_query import CACHE_DIR as ONNX_CACHE_DIR


class KindError(HybridError, ValueError):
    """An unknown kind, or a retriever spec that does not fit its kind; the message says what to fix."""


@dataclass
class RetrieverRuns:
    runs: list[Sequence[ScoredDoc]]  # plain lists, or Runs (retrieval.core.runs) of one document store
    encode_ms: float
    search_ms: float


class RetrieverSearcher(Protocol):
    """Query text in, ranked (doc id, raw score) lists out; times its encode and search halves.

    ``prf`` (one of its kind's :attr:`RetrieverKind.prf_methods`, defaults filled in) asks for
    pseudo-relevance feedback: the feedback round's time counts as search time. ``mode`` is one of its
    kind's :attr:`RetrieverKind.query_modes` (None: the first, the kind's default). ``given`` holds query
    vectors a client computed, one per query (:attr:`RetrieverKind.vector_input`): then nothing is encoded.
    ``where`` is a checked metadata filter: only documents it selects are ranked, before the top ``depth``.
    ``exact``: search exhaustively even where the retriever has an approximate structure (SPLADE's clusters, dense's
    ANN index); a retriever without one searches exactly anyway.
    """

    name: str

    def search(self, queries: Sequence[str], depth: int, threads: int, prf: PrfConfig | None = None,
               mode: str | None = None, given: Sequence[Any] | None = None, where: Filter | None = None,
               exact: bool = False) -> RetrieverRuns: ...

    def close(self) -> None: ...


def merge_runs(runs: Sequence[Sequence[ScoredDoc]], depth: int) -> list[ScoredDoc]:
    """The best ``depth`` of several shards' lists for one query: score descending, then id."""
    merged = [d for run in runs for d in run]
    merged.sort(key=lambda d: (-d.score, d.doc_id))
    return merged[:depth]


class FanOutSearcher:
    """A retriever's shard searchers behind one :class:`RetrieverSearcher`: each shard searches (and encodes)
    the queries itself, and each query's lists are merged by score."""

    def __init__(self, shards: Sequence[RetrieverSearcher]) -> None:
        self.shards = list(shards)
        self.name = self.shards[0].name

    def search(self, queries: Sequence[str], depth: int, threads: int, prf: PrfConfig | None = None,
               mode: str | None = None, given: Sequence[Any] | None = None, where: Filter | None = None,
               exact: bool = False) -> RetrieverRuns:
        results = [s.search(queries, depth, threads, prf, mode, given, where, exact) for s in self.shards]
        runs = [merge_runs([r.runs[q] for r in results], depth) for q in range(len(queries))]
        return RetrieverRuns(runs, sum(r.encode_ms for r in results), sum(r.search_ms for r in results))

    def close(self) -> None:
        for shard in self.shards:
            shard.close()


def onnx_cache_for(index_folder: Path) -> Path:
    """Where ONNX query graphs are cached: beside the index, under its index root (shared by its indexes)."""
    parent = index_folder.parent
    if parent.name == SHARDS_DIR:  # a shard of a sharded index: its index's root
        parent = parent.parent.parent
    root = parent.parent if parent.name == VERSIONS else parent  # a published index lives in ROOT/.versions
    return root / ONNX_CACHE_DIR


GPU_BUILD_CHUNK = 16384  # documents per chunk a build streams through the GPU pipeline


def build_chunk(encoder: Any, batch_size: int) -> int:
    """Documents per chunk a build hands its encoder: large ones for the GPU pipeline, which plans its own batches."""
    return GPU_BUILD_CHUNK if getattr(encoder, "use_pipeline", False) else batch_size * 8


def build_chunk_for(device: str, batch_size: int) -> int:
    """:func:`build_chunk` known before any encoder is loaded (the pipeline runs wherever the device is CUDA): a
    distributed build cuts the corpus at these boundaries, so every chunk is encoded in the batches of one build."""
    return GPU_BUILD_CHUNK if device.startswith("cuda") else batch_size * 8


def elapsed_ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


class BuildStage:
    """Progress bars and the crash-test hook of one build."""

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


@dataclass
class BuildContext:
    """What a kind's batch build reads and where it writes: ``out`` is ``building/NAME``."""

    spec: RetrieverSpec
    model: ResolvedModel | None
    store: DocStore
    work: Path
    out: Path
    options: BuildOptions
    stage: BuildStage
    # Pre-encoded vectors (``hybrid index build --vectors``): what made them, and a reader from read_vectors().
    vector_set: VectorSet | None = None
    vectors: Any = None
    # The corpus's metadata fields: where there are any, Lucene kinds index them for filters.
    fields: FieldSchema = field(default_factory=FieldSchema)
    # A document encoder to reuse (:meth:`RetrieverKind.document_encoder`), owned by the caller: a distributed
    # build's encoder actor loads its model once for many chunks. None: the kind loads one and closes it.
    encoder: Any = None


@dataclass
class TuningQueries:
    """Sample queries for tuning an approximate search against the exact one."""

    texts: list[str] | None  # the corpus's own queries (or a --queries file); None: the kind samples documents
    source: str  # where they came from, for the manifest: "queries.jsonl", a file, "documents' top terms"
    encoder: Any = None  # the retriever's query encoder, for ``texts``
    count: int = 200  # how many to sample from the documents (``texts`` None)


@dataclass
class TuningResult:
    """What tuning found: the cheapest ``parameters`` whose recall@10 against exact search reaches ``target`` (or,
    ``reached`` False, the best tried), measured on ``queries`` sample queries from ``source``."""

    parameters: dict[str, Any]
    recall_at_10: float
    target: float
    queries: int
    source: str
    reached: bool
    grid: list[dict[str, Any]] = field(default_factory=list)  # every setting tried: parameters, recall, p50 ms
    exact_p50_ms: float = 0.0
    seconds: float = 0.0
    exhaustive: bool = False  # the setting chosen is the exact search itself: approximation pays nothing here

    def as_dict(self) -> dict[str, Any]:
        return {"parameters": self.parameters, "recall_at_10": round(self.recall_at_10, 4), "target": self.target,
                "reached": self.reached, "exhaustive": self.exhaustive, "queries": self.queries, "source": self.source,
                "exact_p50_ms": round(self.exact_p50_ms, 4), "seconds": round(self.seconds, 2), "grid": self.grid}


@dataclass(frozen=True)
class ViewState:
    """Which document versions a point-in-time view may return: docnos below ``bound`` whose ``bitmap``
    bit is set (None: no limit)."""

    bound: int | None = None
    bitmap: np.ndarray | None = None


@dataclass(frozen=True)
class WriteBatch:
    """One live write as every component sees it (replayed alike from the write-ahead log)."""

    seq: int
    docs: list[Document]  # upserted documents (empty for a delete)
    added: list[int]  # their docnos
    deleted_ids: list[str]  # ids whose live version goes away (replaced ones not included)
    deleted: list[int]  # docnos that stop being live (replaced and deleted)
    payload: Any = None  # this retriever's encoded documents, as its kind's encode() made them


class Component(ABC):
    """One retriever's files inside one index folder, open for searching and, on demand, for writing."""

    def __init__(self, index_folder: Path, name: str, entry: RetrieverManifest, device: str) -> None:
        self.index_folder = index_folder
        self.name = name
        self.folder = index_folder / name
        self.entry = entry
        self.device = device

    @property
    def onnx_cache(self) -> Path:
        return onnx_cache_for(self.index_folder)

    @abstractmethod
    def searcher(self, encoder: Any, store: DocStore, view: ViewState, batch_size: int) -> RetrieverSearcher:
        """A searcher over what this component holds now (a live one: including uncommitted writes)."""

    @classmethod
    def merged_searcher(cls, components: Sequence[Component], encoder: Any, stores: Sequence[DocStore],
                        views: Sequence[ViewState], batch_size: int) -> RetrieverSearcher:
        """One searcher over the same retriever in every shard of a sharded index. This default searches each
        shard and merges the lists by score (:class:`FanOutSearcher`), which equals one index's ranking wherever a
        document's score does not depend on the other documents; kinds whose scores do (BM25's collection
        statistics) or that can encode a query once for all shards override it."""
        return FanOutSearcher([c.searcher(encoder, s, v, batch_size) for c, s, v in zip(components, stores, views)])

    def open_writer(self) -> None:
        """Get ready for :meth:`apply`; takes the component's own write lock where it has one."""

    def replay_from(self) -> int | None:
        """Writes up to this seq are already durable here; None: :meth:`apply` skips what it holds itself."""
        return None

    @abstractmethod
    def apply(self, batch: WriteBatch) -> None:
        """Apply one write batch (upserts and deletes)."""

    def merge_deletes(self, threshold: float) -> bool:
        """Drop deleted documents from this component's statistics once they pass ``threshold``; True if done."""
        return False

    def compact(self, dead: np.ndarray, threshold: float) -> bool:
        """Forget the ``dead`` docnos for good if there are enough of them; False while any of them stay."""
        return True

    @abstractmethod
    def commit(self, seq: int) -> list[str]:
        """Make every write durable; returns the component's files, relative to the index folder."""

    def close_writer(self) -> None:
        """Release what :meth:`open_writer` took."""

    def close(self) -> None:
        self.close_writer()


class RetrieverKind(ABC):
    """Everything one kind of retriever knows: parameters, build, empty creation, open, encode, describe."""

    name: ClassVar[str]
    # The BuildOptions field holding this kind's default model; None for kinds without a model.
    model_option: ClassVar[str | None] = None
    # Pseudo-relevance feedback methods this kind's searchers run, each with its default parameters.
    prf_methods: ClassVar[dict[str, dict[str, float | int]]] = {}
    # How this kind's searchers can turn query text into a query (name -> what it does); the first is the
    # default. Empty: one way only.
    query_modes: ClassVar[dict[str, str]] = {}
    # What a client may send instead of query text: "dense" (a list of floats), "sparse" ({token: weight}),
    # or None (text only).
    vector_input: ClassVar[str | None] = None
    # The BuildOptions field holding the recall@10 that tuning aims for (:meth:`tune`); None: nothing to tune.
    tuning_target: ClassVar[str | None] = None

    # --- models ------------------------------------------------------------------------------------

    def model_name(self, spec: RetrieverSpec, options: BuildOptions) -> str | None:
        if self.model_option is None:
            if spec.model:
                raise KindError(f"retriever {spec.name!r}: a {self.name} retriever takes no model")
            return None
        return spec.model or str(getattr(options, self.model_option))

    def resolve(self, spec: RetrieverSpec, options: BuildOptions) -> ResolvedModel | None:
        name = self.model_name(spec, options)
        return resolve_model(name) if name else None

    def load_encoder(self, manifest: Manifest, name: str, device: str, role: str = "query") -> Any:
        """The encoder searches (role "query") or live writes (role "document") use; None without a model."""
        return None

    def encode_queries(self, encoder: Any, entry: RetrieverManifest, queries: Sequence[str], mode: str | None,
                       batch_size: int, onnx_cache: Path) -> Encoded | None:
        """``queries`` encoded as this kind's searcher encodes them in query ``mode``, or None where that needs
        the index itself (BM25's text, SPLADE's IDF-weighted ``tokens``): then each shard encodes its own."""
        return None

    # --- building ----------------------------------------------------------------------------------

    def document_encoder(self, model: ResolvedModel | None, options: BuildOptions) -> Any:
        """The encoder a batch build encodes documents with (None: the kind encodes nothing, as BM25)."""
        return None

    @abstractmethod
    def parameters(self, options: BuildOptions) -> dict[str, Any]:
        """The parameters a build with ``options`` records (and a reused index must match)."""

    @abstractmethod
    def build(self, ctx: BuildContext) -> RetrieverManifest:
        """Index every document of ``ctx.store`` into ``ctx.out``."""

    def export(self, ctx: BuildContext, out: Path) -> VectorSet | None:
        """Encode every document of ``ctx.store`` exactly as :meth:`build` would and write the vectors into
        ``out`` (``hybrid encode``); None for kinds that index text, not vectors."""
        return None

    def read_vectors(self, folder: Path, vector_set: VectorSet, ids: Sequence[str], partial: bool = False) -> Any:
        """A reader over ``vector_set`` in ``folder`` for :meth:`build`, checked to cover exactly ``ids`` (``partial``:
        at least them; a shard of a sharded build reads its part)."""
        raise KindError(f"a {self.name} retriever is built from text, not from pre-encoded vectors")

    @abstractmethod
    def create_empty(self, out: Path, spec: RetrieverSpec, model: ResolvedModel | None,
                     options: BuildOptions) -> RetrieverManifest:
        """An empty retriever, ready for live writes."""

    def matches(self, entry: RetrieverManifest, spec: RetrieverSpec, options: BuildOptions) -> bool:
        """Whether ``entry`` is what building ``spec`` with ``options`` would give (the harness reuses it then)."""
        if entry.kind != self.name:
            return False
        model = self.resolve(spec, options)
        if model is not None and (entry.model_id, entry.weights_sha256) != (model.model_id, model.weights_sha256):
            return False
        recorded = {k: entry.parameters.get(k) for k in self.parameters(options)}
        return recorded == self.parameters(options)

    # --- searching and live writes -----------------------------------------------------------------

    @abstractmethod
    def open(self, index_folder: Path, name: str, entry: RetrieverManifest, options: OpenOptions) -> Component:
        ...

    def encode(self, encoder: Any, entry: RetrieverManifest, texts: Sequence[str], batch_size: int) -> Any:
        """Documents as this kind indexes them, in a JSON-able form for the write-ahead log; None: needs none."""
        return None

    def prf(self, name: str, config: PrfConfig) -> PrfConfig:
        """``config`` checked against this kind's methods and completed with the method's defaults."""
        if config.method not in self.prf_methods:
            offered = ", ".join(self.prf_methods) or "none"
            raise KindError(f"retriever {name!r} ({self.name}) has no PRF method {config.method!r}; it offers: {offered}")
        defaults = self.prf_methods[config.method]
        extra = [k for k in PRF_FIELDS if getattr(config, k) is not None and k not in defaults]
        if extra:
            raise KindError(f"retriever {name!r}: PRF method {config.method!r} takes {', '.join(defaults)}, "
                            f"not {', '.join(extra)}")
        filled = config.filled(defaults)
        if filled.fb_docs is not None and not 1 <= filled.fb_docs <= 100:
            raise KindError(f"retriever {name!r}: PRF fb_docs must be between 1 and 100, got {filled.fb_docs}")
        if filled.fb_terms is not None and not 1 <= filled.fb_terms <= 1000:
            raise KindError(f"retriever {name!r}: PRF fb_terms must be between 1 and 1000, got {filled.fb_terms}")
        for key in ("original_weight", "alpha", "beta"):
            value = getattr(filled, key)
            if value is not None and not (0.0 <= value <= 10.0):
                raise KindError(f"retriever {name!r}: PRF {key} must be between 0 and 10, got {value}")
        if filled.original_weight is not None and filled.original_weight > 1.0:
            raise KindError(f"retriever {name!r}: PRF original_weight is a share of the query mix, 0 to 1")
        return filled

    def query_mode(self, name: str, mode: str) -> str:
        """``mode`` checked against this kind's :attr:`query_modes`."""
        if mode not in self.query_modes:
            offered = ", ".join(self.query_modes) or "none (it has one way to search)"
            raise KindError(f"retriever {name!r} ({self.name}) has no query mode {mode!r}; it offers: {offered}")
        return mode

    def tune(self, component: Component, queries: TuningQueries, target: float) -> TuningResult | None:
        """Measure the recall@10 of ``component``'s approximate search against its exact search on ``queries`` and
        find the cheapest parameters reaching ``target``; None: the component searches exactly only."""
        return None

    def describe(self, entry: RetrieverManifest) -> str:
        """One line for listings: the kind, its model and its main parameters."""
        model = f" {entry.model_id}" if entry.model_id else ""
        return f"{self.name}{model}"


# The query modes of kinds whose queries go through a sentence-transformers model.
MODEL_QUERY_MODES = {
    "torch": "the model's query encoder on torch, as documents are encoded",
    "onnx": "the same encoder exported to ONNX Runtime, fp32 (CPU; query vectors within cosine 0.999 of torch's)",
    "onnx-int8": "ONNX Runtime with dynamic int8 weights (CPU; fastest, vectors move more)",
}


def checked_model(manifest: Manifest, name: str) -> ResolvedModel:
    """The model retriever ``name`` was built with, refused if its weights have changed since."""
    info = manifest.retrievers[name]
    assert info.model_id is not None
    model = resolve_model(info.model_id)
    if info.weights_sha256 and model.weights_sha256 != info.weights_sha256:
        raise ModelError(
            f"index {manifest.name!r}: the {name} model {info.model_id!r} has other weights than the ones "
            "the index was built with; rebuild the index or restore the model"
        )
    return model
