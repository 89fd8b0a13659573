"""What building and opening an index need, derived from :class:`~retrieval.core.settings.Settings`.

``from_settings`` is the one path from the settings to these consumers: every field whose name is a
settings field is filled from the settings, so a new setting reaches builds, opens, the CLI, the
service and the harness alike without anything being copied by hand (tests/unit/test_layers.py fails if a
settings field reaches no consumer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from retrieval.core.settings import DEFAULT_DENSE_MODEL, DEFAULT_SPARSE_MODEL, Settings
from retrieval.core.types import DEFAULT_RETRIEVERS, RetrieverSpec

T = TypeVar("T")


def _from_settings(cls: type[T], settings: Settings, overrides: dict[str, Any]) -> T:
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    values = {name: getattr(settings, name) for name in names if name in Settings.model_fields}
    if "device" in names:
        values["device"] = settings.resolved_device()
    unknown = set(overrides) - names
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {sorted(unknown)[0]!r}")
    return cls(**{**values, **overrides})


@dataclass
class BuildOptions:
    """How to build (or create empty) an index: which retrievers, on what device, with which parameters."""

    retrievers: tuple[RetrieverSpec, ...] = DEFAULT_RETRIEVERS
    device: str = "cpu"
    batch_size: int = 32
    sparse_model: str = DEFAULT_SPARSE_MODEL
    dense_model: str = DEFAULT_DENSE_MODEL
    faiss_factory: str = "Flat"
    splade_scale: float = 100.0
    splade_doc_top_k: int | None = None
    splade_doc_vectors: bool = True  # term vectors for SPLADE PRF
    splade_matrix: bool = True  # impacts beside the Lucene index, for in-memory search (indexes/storage/sparse/impact_matrix.py)
    splade_clusters: bool = True  # the approximate structure beside the matrix (indexes/storage/sparse/clusters.py)
    tune_recall_sparse: float = 0.98  # recall@10 against exact that build-time tuning aims for (sparse retrievers)
    tune_recall_dense: float = 0.95  # the same for dense ANN indexes (HNSW efSearch, IVF nprobe)
    # The corpus's own queries (BEIR queries.jsonl), for tuning at build; None: found beside the corpus file, else
    # sampled from the documents (indexes/indexing/tuning.py).
    tune_queries: Path | None = None
    threads: int = 2
    progress: bool = True
    on_error: str = "fail"  # "skip": leave bad corpus lines out, counted in the manifest
    shards: int = 1  # > 1: one complete index per shard, documents assigned by a stable hash of their _id
    # A Ray cluster to build on ("local", "auto" or an address; None: in this process) and its encoder actors
    # (0: one per GPU when the device is CUDA, else one per CPU of the cluster). See indexes/indexing/ray_build.py.
    ray: str | None = None
    ray_workers: int = 0
    # Retrievers that encode nothing (BM25) build beside the encoding ones: "auto" (on CUDA), "on", "off".
    overlap_builds: str = "auto"
    # Called with each stage's name as the build passes it (crash-safety tests use it to stop a build there).
    on_stage: Callable[[str], None] | None = field(default=None, repr=False, compare=False)
    # Progress for background jobs: (stage, documents done in it, total or None).
    on_progress: Callable[[str, int, int | None], None] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> BuildOptions:
        return _from_settings(cls, settings, overrides)

    def with_(self, **changes: Any) -> BuildOptions:
        return replace(self, **changes)


@dataclass(frozen=True)
class OpenOptions:
    """How to open an index for searching (and, live, for writing)."""

    device: str = "cpu"
    batch_size: int = 32
    threads: int = 2
    verify: str = "size"  # check files against the manifest: "full" (sha256), "size", "off"
    depth: int = 100  # candidates per retriever before fusion, when a request does not say
    rrf_k: int = 60  # RRF's k, when a request does not say
    checkpoint_mb: int = 64
    compact_fraction: float = 0.2
    # Default query mode per retriever name or kind ({"splade": "onnx-int8"}); a request may choose another.
    query_modes: dict[str, str] = field(default_factory=dict)
    dense_flat_search: str = "auto"  # flat dense indexes: "auto" (torch on CUDA, numba on the CPU), "faiss", "torch", "numba"
    dense_flat_dtype: str = "fp32"  # the torch flat search's storage: fp32, fp16, bf16
    splade_search: str = "auto"  # "matrix" (in memory), "lucene", "auto" (the matrix when it has one that fits)
    splade_matrix_max_mb: int = 8192
    min_free_disk_mb: int = 64  # below this much free space a live write or snapshot is refused before it starts
    exact: bool = False  # every search exact: SPLADE's whole matrix, dense's flat scan (a request may ask per search)
    splade_probes: int | None = None  # clusters an approximate SPLADE search scores; None: the index's tuned value
    dense_ef_search: int | None = None  # HNSW efSearch; None: the index's tuned value, else 256
    dense_nprobe: int | None = None  # IVF nprobe; None: the index's tuned value, else 32

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> OpenOptions:
        return _from_settings(cls, settings, overrides)

    @property
    def checkpoint_bytes(self) -> int:
        return self.checkpoint_mb * 2**20
