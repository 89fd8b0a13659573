"""Request and response models: the API's public contract (and its OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

RetrieverName = Literal["bm25", "splade", "dense"]
Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Fusion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["rrf", "weighted"] = Field("rrf", description="Reciprocal rank fusion or a weighted score sum.")
    rrf_k: int = Field(60, ge=1, le=100_000, description="RRF constant k in 1/(k + rank).")
    weights: dict[RetrieverName, Weight] | None = Field(
        None, description="Per-retriever weights (>= 0, not all 0); missing retrievers weigh 1."
    )
    normalization: Literal["minmax", "zscore"] = Field("minmax", description="Score normalization for 'weighted'.")

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value and all(w == 0 for w in value.values()):
            raise ValueError("at least one weight must be greater than 0")
        return value


class SearchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(10, ge=1, le=1000, description="Hits to return.")
    retrievers: list[RetrieverName] | None = Field(
        None, min_length=1, description="Subset to run; default: every retriever of the index."
    )
    fusion: Fusion = Field(default_factory=Fusion)  # type: ignore[arg-type]
    depth: int = Field(100, ge=1, le=1000, description="Candidates per retriever before fusion.")
    explain: bool = Field(False, description="Add each retriever's rank and raw score to every hit.")
    include_text: bool = Field(False, description="Add title, text and metadata to every hit.")


class SearchRequest(SearchOptions):
    query: str = Field(..., min_length=1, description="Plain text; Lucene syntax characters are searched as text.")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "query": "what similarity laws must be obeyed when constructing aeroelastic models",
                    "k": 5,
                    "retrievers": ["bm25", "splade", "dense"],
                    "fusion": {"method": "rrf", "rrf_k": 60},
                    "explain": True,
                }
            ]
        },
    )


class BatchSearchRequest(SearchOptions):
    queries: list[str] = Field(..., min_length=1, description="Up to the server's batch limit (default 1,000).")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"queries": ["heat transfer in slabs", "wing slipstream"], "k": 3}]},
    )


class RetrieverHit(BaseModel):
    rank: int
    score: float


class Hit(BaseModel):
    id: str
    score: float
    rank: int
    title: str | None = None
    text: str | None = None
    metadata: dict[str, Any] | None = None
    explain: dict[str, RetrieverHit | None] | None = Field(
        None, description="Per retriever: its rank and raw score for this document, or null if it did not return it."
    )


class SearchResponse(BaseModel):
    hits: list[Hit]
    took_ms: float
    retrievers: list[str]
    timings_ms: dict[str, float] = Field(default_factory=dict, description="Per-query encode/search/fuse times.")


class BatchSearchResponse(BaseModel):
    results: list[SearchResponse]
    took_ms: float


class RetrieverInfo(BaseModel):
    name: str
    model_id: str | None
    parameters: dict[str, Any]
    size_bytes: int
    build_seconds: float


class IndexInfo(BaseModel):
    name: str
    documents: int
    created: str
    corpus_sha256: str
    size_bytes: int
    retrievers: list[RetrieverInfo]


class IndexList(BaseModel):
    indexes: list[IndexInfo]


class ErrorBody(BaseModel):
    code: int
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    ready: bool
    indexes: list[str]
    failed: dict[str, str] = Field(default_factory=dict, description="Indexes that could not be loaded, and why.")
