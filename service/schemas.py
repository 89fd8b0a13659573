"""Request and response models: the API's public contract (and its OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from retrieval.core.java_text import checked_strings

from retrieval.search.hits import Hit
from retrieval.search.request import (  # the search request models are the search layer's own: one copy
    AdaptiveFusion,
    BatchSearchRequest,
    Fusion,
    Prf,
    Rerank,
    SearchOptions,
    SearchRequest,
)

__all__ = ["AdaptiveFusion", "BatchSearchRequest", "Fusion", "Prf", "Rerank", "SearchOptions", "SearchRequest"]


class SearchResponse(BaseModel):
    hits: list[Hit] = Field(..., description="Ranked hits; `explain` gives each retriever's rank and raw score for "
                                             "the hit, or null where that retriever did not return it.")
    took_ms: float
    retrievers: list[str]
    timings_ms: dict[str, float] = Field(default_factory=dict, description="Per-query encode/search/fuse times.")
    partial: bool | None = Field(None, description="Present (true) when timeout_ms passed mid-search: the hits are "
                                                   "what the stages run by then found.")
    skipped: list[str] | None = Field(None, description="With partial: the retrievers and stages (rerank, highlight) "
                                                        "left out.")


class BatchSearchResponse(BaseModel):
    results: list[SearchResponse]
    took_ms: float


class RetrieverInfo(BaseModel):
    name: str
    kind: str = Field(..., description="bm25, splade or dense: how this retriever indexes and searches.")
    description: str = ""
    model_id: str | None
    parameters: dict[str, Any]
    size_bytes: int
    build_seconds: float
    search_tuning: dict[str, Any] | None = Field(
        None, description="How this retriever's default (approximate) search was tuned against exact search: the "
                          "parameters chosen (SPLADE: probes, the clusters scored), the recall@10 measured and its "
                          "target, the sample queries and their source, every setting tried. null: it searches "
                          "exactly only, or was not tuned; 'exact': true in a search request skips the approximation.")


class IndexInfo(BaseModel):
    name: str
    documents: int
    created: str
    corpus_sha256: str
    size_bytes: int
    retrievers: list[RetrieverInfo]
    seq: int = Field(0, description="Write batches applied since the build (0: as built).")
    updated: str | None = Field(None, description="Last checkpoint of live writes.")
    fields: dict[str, Literal["keyword", "number", "date", "boolean"]] = Field(
        default_factory=dict, description="Metadata fields a filter can use, and their types.")


class IndexList(BaseModel):
    indexes: list[IndexInfo]


class ErrorBody(BaseModel):
    code: int
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str = Field(..., description="The server's package version; the Python client compares it with its own.")


class Ready(BaseModel):
    ready: bool
    indexes: list[str]
    failed: dict[str, str] = Field(default_factory=dict, description="Indexes that could not be loaded, and why.")


# --- live index management -------------------------------------------------------------------------

class SafeStrings(BaseModel):
    """A request whose strings are made safe before validation (:mod:`retrieval.core.java_text`): text cleaned,
    every other string with a lone surrogate or a NUL refused (422)."""

    @model_validator(mode="before")
    @classmethod
    def _safe_strings(cls, values: Any) -> Any:
        return checked_strings(values, frozenset({"title", "text"})) if isinstance(values, dict) else values


class DocumentIn(SafeStrings):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(..., alias="_id", min_length=1, max_length=1024, description="Upsert key: replaces a document with this id.")
    title: str = ""
    text: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict, description="Kept with the document, returned with "
                                     "include_text, and filterable (nested objects as FIELD.SUB; a value that does not "
                                     "fit the field's recorded type is a 422).",
                                     examples=[{"lang": "en", "year": 1962, "published": "1962-05-01", "tags": ["aero"]}])


class UpsertRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"documents": [{"_id": "d1", "title": "Wing flutter",
                                                         "text": "Flutter of swept wings at transonic speeds."}]}]},
    )

    documents: list[DocumentIn] = Field(..., min_length=1, description="Up to the server's limit (default 1,000).")
    wait: bool = Field(True, description="Answer once the write is durable and searchable (200); false: 202 and a job.")


class DeleteDocumentsRequest(SafeStrings):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"ids": ["d1", "d2"]}]})

    ids: list[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(..., min_length=1)


class WriteResponse(BaseModel):
    seq: int = Field(..., description="The index's write sequence number after this write.")
    upserted: int = 0
    deleted: int = 0
    missing: list[str] = Field(default_factory=list, description="Ids to delete that the index does not hold.")
    documents: int = Field(..., description="Documents in the index after this write.")
    took_ms: float
    encode_ms: float = Field(0.0, description="Encoding the documents (SPLADE and dense).")
    apply_ms: float = Field(0.0, description="Log, document store, Lucene, FAISS and the new view.")


class CreateIndexRequest(SafeStrings):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "news"}, {"name": "scifact", "corpus": "/data/beir/scifact"}]},
    )

    name: str = Field(..., min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    corpus: str | None = Field(None, description="Server-side BEIR corpus file or folder to build from (a job); "
                                                 "absent: create an empty index.")
    retrievers: list[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        default_factory=lambda: ["bm25", "splade", "dense"], min_length=1,
        description="Each a kind's own name (bm25, splade, dense: that kind with the server's default model) or "
                    "NAME=KIND[:MODEL], e.g. 'dense-e5=dense:intfloat/e5-small-v2'.")
    faiss: str | None = Field(None, description="FAISS factory string (default: the server's).")
    on_error: Literal["fail", "skip"] = "fail"


class JobInfo(BaseModel):
    id: str
    kind: str
    index: str
    state: Literal["queued", "running", "succeeded", "failed"]
    stage: str
    done: int
    total: int | None
    docs_per_second: float | None
    errors: list[str]
    result: dict[str, Any] | None
    created: float
    started: float | None
    finished: float | None


class JobList(BaseModel):
    jobs: list[JobInfo]


class SnapshotInfo(BaseModel):
    index: str
    snapshot: str = Field(..., description="NAME@STAMP: `hybrid serve --index-root INDEX_ROOT/.snapshots/NAME@STAMP` serves it.")
    path: str = Field(..., description="Relative to the server's index root.")
    seq: int
    documents: int


# --- judgments and the harness's leaderboard (the workbench, /ui) ----------------------------------------------------

class JudgedQuery(BaseModel):
    id: str
    text: str
    relevant: int = Field(..., description="Documents judged relevant (grade > 0) for this query.")


class QueryList(BaseModel):
    index: str
    dataset: str = Field(..., description="The BEIR folder the index was built from.")
    split: str
    queries: list[JudgedQuery] = Field(..., description="The split's judged queries, as the harness evaluates them.")


class QrelsResponse(BaseModel):
    index: str
    judgments: dict[str, dict[str, int]] = Field(..., description="Query id -> document id -> graded relevance.")


class LeaderboardRow(BaseModel):
    dataset: str
    method: str
    queries: int
    scores: dict[str, float]
    encode_ms: float
    search_ms: float
    fuse_ms: float
    p_vs_bm25: float | None = None
    p_vs_best_single: float | None = None
    best_single: str | None = None
    base: str | None = Field(None, description="The method this one refines (a PRF run: the same without PRF).")
    p_vs_base: float | None = None
    per_query: bool = Field(False, description="Per-query metrics are there (GET /v1/leaderboard/compare).")


class Leaderboard(BaseModel):
    command: str = ""
    primary: str = Field("ndcg@10", description="The metric the p-values (paired randomization test) are on.")
    wall_seconds: float | None = None
    results: list[LeaderboardRow]


class QueryOutcome(BaseModel):
    id: str
    a: float
    b: float


class MethodComparison(BaseModel):
    dataset: str
    metric: str
    a: str
    b: str
    mean_a: float
    mean_b: float
    wins: int = Field(..., description="Queries where a scores higher than b.")
    losses: int = Field(..., description="Queries where b scores higher than a.")
    ties: int
    p_value: float = Field(..., description="Paired randomization test (10,000 trials), as the leaderboard's.")
    queries: list[QueryOutcome]
