"""One typed settings object for the whole service: env vars ``HYBRID_*`` and an optional file.

Precedence (highest first): explicit constructor arguments (CLI flags), environment variables,
the TOML or JSON file named by ``HYBRID_CONFIG``, then the defaults below.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_SPARSE_MODEL = "splade-tiny"
DEFAULT_DENSE_MODEL = "all-MiniLM-L6-v2"


def parse_query_modes(pairs: Iterable[str]) -> dict[str, str]:
    """``NAME=MODE`` pairs (``splade=onnx-int8``) -> ``{NAME: MODE}``; whether the modes exist is checked when
    an index opens. ValueError names the first pair that is not ``NAME=MODE``."""
    modes: dict[str, str] = {}
    for pair in pairs:
        name, sep, mode = pair.partition("=")
        if not sep or not name.strip() or not mode.strip():
            raise ValueError(f"{pair!r} is not NAME=MODE, e.g. splade=tokens or dense=onnx-int8")
        modes[name.strip()] = mode.strip()
    return modes


def query_modes_text(modes: Mapping[str, str]) -> str:
    """The ``HYBRID_QUERY_MODES`` form of ``modes``: how a server started as a subprocess receives them."""
    return ",".join(f"{name}={mode}" for name, mode in modes.items())


def default_index_root() -> Path:
    return Path(platformdirs.user_data_dir("hybrid-retrieval")) / "indexes"


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Reads the file named by HYBRID_CONFIG (``.toml`` or ``.json``)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = os.environ.get("HYBRID_CONFIG")
        self._data: dict[str, Any] = {}
        if path:
            file = Path(path)
            if not file.is_file():
                raise ValueError(f"HYBRID_CONFIG points at {path!r}, which is not a file")
            text = file.read_text()
            self._data = tomllib.loads(text) if file.suffix == ".toml" else json.loads(text)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HYBRID_", extra="ignore")

    index_root: Path = Field(default_factory=default_index_root, description="Folder holding the indexes.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where encoders and FAISS run.")
    batch_size: int = Field(32, ge=1, le=4096, description="Encoder batch size.")
    sparse_model: str = Field(DEFAULT_SPARSE_MODEL, description="SPLADE model: built-in name, path or hub id.")
    dense_model: str = Field(DEFAULT_DENSE_MODEL, description="Dense model: built-in name, path or hub id.")
    faiss_factory: str = Field("Flat", description="FAISS index factory string for dense indexes.")
    dense_flat_search: Literal["auto", "faiss", "torch", "numba"] = Field(
        "auto", description="What searches flat dense indexes: 'auto' is a torch matmul + top-k on CUDA (near the "
                            "memory-bandwidth bound, where FAISS's GPU flat kernel is not) and a compiled loop over "
                            "FAISS's own rows on the CPU (faster than FAISS's flat kernel; same scores sharded or not).")
    dense_flat_dtype: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32", description="Storage of the torch flat search: fp16/bf16 halve GPU memory and batch-1 time; "
                            "scores move by about 1e-3.")
    splade_scale: float = Field(100.0, gt=0, description="Quantization factor: impact = round(weight * scale).")
    splade_doc_top_k: int | None = Field(None, ge=1, description="Keep at most this many terms per document.")
    splade_doc_vectors: bool = Field(
        True, description="Store each document's impacts as a Lucene term vector, which SPLADE PRF reads; off, the "
                          "impact index is about 3x smaller and builds about 1.5x faster (eval/bench/README.md, Scale).")
    splade_matrix: bool = Field(
        True, description="Write each SPLADE document's impacts beside the Lucene index (matrix/, about 6 bytes an "
                          "impact), so searches can run on them in memory (splade_search).")
    splade_search: Literal["auto", "lucene", "matrix"] = Field(
        "auto", description="What searches SPLADE: 'matrix' scores in memory (same hits and scores as Lucene, 10-15x "
                            "faster on the CPU), 'lucene' through Lucene; 'auto' takes the matrix when the index has one "
                            "that fits splade_matrix_max_mb. PRF's feedback pass goes through Lucene.")
    splade_matrix_max_mb: int = Field(8192, ge=0, description=(
        "The largest matrix 'auto' loads into memory (about 3 GiB a million documents of 400 impacts, clusters "
        "included); a larger one is searched through Lucene, exactly and slower."))
    splade_clusters: bool = Field(
        True, description="Build the approximate SPLADE structure with the matrix: its rows grouped into clusters of "
                          "about 32 similar documents (matrix/clusters.npz), of which a search scores the best few "
                          "('probes', tuned at build to reach tune_recall_sparse against exact search).")
    splade_probes: int | None = Field(
        None, ge=1, description="Clusters an approximate SPLADE search scores; default: what the index's tuning "
                                "recorded (hybrid index info: search_tuning).")
    exact: bool = Field(
        False, description="Search exactly by default: SPLADE scores every row of its matrix instead of the clusters "
                           "its approximate structure picks (dense: the flat scan instead of the ANN index). A "
                           "request's 'exact' asks for it per search.")
    tune_recall_sparse: float = Field(
        0.98, gt=0, le=1, description="Recall@10 against exact search that tuning (at build, hybrid index tune) aims "
                                      "for with sparse retrievers; below it a build warns.")
    tune_recall_dense: float = Field(
        0.95, gt=0, le=1, description="Recall@10 against exact search that tuning (at build, hybrid index tune) aims "
                                      "for with dense ANN indexes (HNSW's efSearch, IVF's nprobe); below it a build "
                                      "warns.")
    dense_ef_search: int | None = Field(
        None, ge=1, description="efSearch of HNSW dense searches; default: the index's tuned value (hybrid index "
                                "info: search_tuning), else 256.")
    dense_nprobe: int | None = Field(
        None, ge=1, description="IVF lists a dense search visits (nprobe); default: the index's tuned value, else 32.")
    overlap_builds: Literal["auto", "on", "off"] = Field(
        "auto", description="Build retrievers that encode nothing (BM25) on the CPU while the others encode: 'auto' "
                            "does so when the device is CUDA (on the CPU the encoders already use every core).")
    threads: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1,
                         description="Lucene threads for indexing and batch searches; the server's search pool has "
                                     "twice as many.")
    depth: int = Field(100, ge=1, le=10_000, description="Candidates per retriever before fusion.")
    rrf_k: int = Field(60, ge=1, description="RRF's k when a search does not say (a hit scores 1/(k + rank)): a "
                                             "larger k narrows the gap between top and lower ranks.")
    verify: Literal["full", "size", "off"] = Field(
        "full", description="Check index files against the manifest at load: sha256 and size, size only, or not."
    )
    host: str = Field("127.0.0.1", description="Address the server listens on (0.0.0.0: every interface).")
    port: int = Field(8000, ge=1, le=65535, description="Port the server listens on.")
    workers: int = Field(1, ge=1, description="Server processes (Ray Serve: ingress replicas), each holding its own "
                                              "copy of the indexes; writes need 1.")
    access_log: bool = Field(
        False, description="One log line per request from uvicorn (about 0.1 ms a request on 2 cores; /metrics counts "
                           "requests either way).")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Bearer keys with the search scope, each plain or 'sha256:HEX' (its digest: "
                                          "the key itself stored nowhere); with admin_keys and keys_file unset, no "
                                          "auth."
    )
    admin_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Bearer keys with the admin scope (search, plus changing indexes), plain or "
                                          "'sha256:HEX'."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS; empty means CORS stays off."
    )
    max_batch_queries: int = Field(1000, ge=1, description="The most queries one batch search over HTTP may send.")
    max_k: int = Field(1000, ge=1, le=10_000, description="The largest k (hits) a search over HTTP may ask for.")
    max_depth: int = Field(1000, ge=1, le=10_000, description="The largest depth (candidates per retriever) a search "
                                                              "over HTTP may ask for.")
    max_query_chars: int = Field(10_000, ge=1, description="The longest query (characters) a search over HTTP may "
                                                          "send.")
    micro_batch_max: int = Field(32, ge=1, le=1024, description="Concurrent single queries fused into one batch (1 = off).")
    micro_batch_wait_ms: float = Field(2.0, ge=0, le=1000, description="How long a lone query waits for company.")
    max_concurrent: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 1) // 2), ge=1,
        description="Searches (and writes) run at once over HTTP; more searches wait in a queue of max_queued. The "
                    "default, one per two cores (a search already encodes on several), kept admitted searches "
                    "within 1.6x their unloaded p99 at 4x overload on 2 cores (eval/bench/README.md, Overload); "
                    "more trades latency for throughput.")
    max_queued: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 1) // 2), ge=0,
        description="Searches that may wait for a slot; beyond, a search is answered 429 with Retry-After at once. "
                    "Default: max_concurrent's default.")
    max_queued_writes: int = Field(64, ge=0, description="Writes (upserts, deletes) that may wait for the write pool; "
                                                         "beyond, 429 with Retry-After (a write is never dropped "
                                                         "unanswered).")
    max_body_bytes: int = Field(16 * 2**20, ge=1024, description="The largest request body (bytes); larger: 413.")
    drain_seconds: float = Field(30.0, ge=0, description="On SIGTERM: how long requests in flight may take to finish "
                                                        "before the server checkpoints and exits.")
    ssl_keyfile: Path | None = Field(None, description="TLS private key (PEM): serve HTTPS; with ssl_certfile.")
    ssl_certfile: Path | None = Field(None, description="TLS certificate chain (PEM): serve HTTPS; with ssl_keyfile.")
    keys_file: Path | None = Field(
        None, description="A file of API keys, re-read when it changes (rotation without a restart): lines 'search "
                          "KEY' or 'admin KEY', each KEY plain or 'sha256:HEX' (docs/operations.md).")
    max_write_docs: int = Field(1000, ge=1, description="Documents (or ids) in one upsert or delete request.")
    min_free_disk_mb: int = Field(
        64, ge=0, description="Live writes and snapshots are refused (507) before they start while the disk holding "
                              "the index has less free space than this (MiB); 0: no check (a full disk still fails "
                              "cleanly, docs/operations.md).")
    checkpoint_mb: int = Field(64, ge=1, description="Checkpoint a live index once its write-ahead log passes this size.")
    compact_fraction: float = Field(
        0.2, gt=0, le=1, description="At a checkpoint, remove deleted vectors from FAISS once they are this share of it."
    )
    query_modes: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Default query mode per retriever name or kind, 'splade=onnx-int8,dense=onnx' (modes: README).",
    )
    rerank_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Cross-encoders a search request may name in 'rerank' (comma-separated "
                                          "names, folders or hub ids); empty: reranking over HTTP is off.")
    corpus_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="Folders that POST /v1/indexes may read corpora from; empty: any path."
    )
    reports_root: Path = Field(
        Path("reports/beir"), description="The BEIR harness's --out folder (results.json, per-query metrics) that "
                                          "GET /v1/leaderboard serves to the workbench; relative to the working folder.")
    workbench: bool = Field(True, description="Serve the relevance workbench, a web page on the public API, at /ui.")

    @field_validator("api_keys", "admin_keys", "cors_origins", "corpus_roots", "rerank_models", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("query_modes", mode="before")
    @classmethod
    def _split_modes(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_query_modes(p for p in value.split(",") if p.strip())
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _ConfigFileSource(settings_cls)

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
