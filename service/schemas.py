"""Request and response models: the API's public contract (and its OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from retrieval.search.pipeline import Hit

# Retrievers are named per index (bm25, splade, dense, or any name an index was built with); a request
# naming one the index lacks is answered 422 with the index's names, so the schema takes any name.
RetrieverName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", examples=["splade"])]
Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Bound = Annotated[float, Field(allow_inf_nan=False)]


Feature = Literal["nqc", "margin", "agreement"]
Coefficient = Annotated[float, Field(ge=-50, le=50, allow_inf_nan=False)]


class AdaptiveFusion(BaseModel):
    """QPP-weighted fusion: per-query weights from each retriever's own result list (``hybrid eval beir``
    with a ``qpp:`` method fits them and prints this object)."""

    model_config = ConfigDict(extra="forbid")

    coefficients: dict[Feature, Coefficient] = Field(..., description="theta per feature: a weight is scaled by "
                                                                       "exp(sum theta_f * (feature_f - center_f)).")
    centers: dict[RetrieverName, dict[Feature, Coefficient]] | None = Field(
        None, description="Per retriever, each feature's mean over the training queries (default 0).")


class Fusion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["rrf", "weighted"] = Field("rrf", description="Reciprocal rank fusion or a weighted score sum.")
    rrf_k: int | None = Field(None, ge=1, le=100_000,
                              description="RRF constant k in 1/(k + rank); default: the server's rrf_k setting (60).")
    weights: dict[RetrieverName, Weight] | None = Field(
        None, description="Per-retriever weights (>= 0, not all 0); missing retrievers weigh 1."
    )
    normalization: Literal["minmax", "zscore", "dbsf"] = Field(
        "minmax", description="Score normalization for 'weighted'; 'dbsf' is Qdrant's distribution-based score fusion "
                              "(mean ± 3 sample standard deviations, a missing document adds 0).")
    adaptive: AdaptiveFusion | None = Field(None, description="Query-adaptive weights ('weighted' only).")
    bounds: dict[RetrieverName, tuple[Bound, Bound]] | None = Field(
        None, description="'weighted' with 'minmax' only: fixed [low, high] per retriever instead of each result "
                          "list's own min and max (scores clamped into them; a missing document counts as low), "
                          "so a retriever's normalized scores mean the same in every query, e.g. {\"dense\": [0, 1]}.")

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value and all(w == 0 for w in value.values()):
            raise ValueError("at least one weight must be greater than 0")
        return value


class Prf(BaseModel):
    """Pseudo-relevance feedback for one retriever; unset fields take the method's defaults."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field(..., pattern=r"^[a-z0-9_]{1,32}$", examples=["rm3"],
                        description="bm25: rm3 (10 docs, 10 terms, weight 0.5) or rocchio (10/10, alpha 1, "
                                    "beta 0.75), Anserini's own; dense: average (3 docs) or rocchio (5 docs, "
                                    "alpha 0.4, beta 0.6) of stored vectors.")
    fb_docs: int | None = Field(None, ge=1, le=100, description="Feedback documents (top hits).")
    fb_terms: int | None = Field(None, ge=1, le=1000, description="Expansion terms (BM25 methods).")
    original_weight: float | None = Field(None, ge=0, le=1, allow_inf_nan=False,
                                          description="RM3: weight of the original query.")
    alpha: float | None = Field(None, ge=0, le=10, allow_inf_nan=False, description="Rocchio: weight of the query.")
    beta: float | None = Field(None, ge=0, le=10, allow_inf_nan=False,
                               description="Rocchio: weight of the feedback documents.")


QueryMode = Annotated[str, Field(pattern=r"^[a-z0-9-]{1,32}$", examples=["onnx-int8"])]


class Rerank(BaseModel):
    """Second stage: a cross-encoder re-scores the fused top ``depth`` (title + text) and re-orders them."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., min_length=1, max_length=300, examples=["cross-encoder/ms-marco-MiniLM-L6-v2"],
                       description="One of the server's rerank_models (HYBRID_RERANK_MODELS).")
    depth: int = Field(50, ge=1, le=1000, description="Fused hits re-scored; offset + k must lie within them, and "
                                                      "the results end there.")
    batch_size: int = Field(32, ge=1, le=1024, description="Pairs per cross-encoder forward pass.")


class SearchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(10, ge=1, le=1000, description="Hits to return.")
    offset: int = Field(0, ge=0, le=10_000, description="Skip this many fused hits: page p of size k is offset=(p-1)*k. "
                                                        "Each retriever fetches max(depth, offset + k) candidates, so a "
                                                        "page equals the same ranks of one larger request.")
    min_score: float | None = Field(None, allow_inf_nan=False, description="Drop hits whose fused score (raw score for "
                                                                           "one retriever) is below this, before paging.")
    retrievers: list[RetrieverName] | None = Field(
        None, min_length=1, description="Subset to run; default: every retriever of the index."
    )
    fusion: Fusion = Field(default_factory=Fusion)  # type: ignore[arg-type]
    depth: int | None = Field(None, ge=1, le=1000, description="Candidates per retriever before fusion; "
                                                                 "default: the server's depth setting (100).")
    explain: bool = Field(False, description="Add each retriever's rank, raw score, normalized score (weighted fusion) "
                                             "and contribution to every hit, and 'contributions': every fused "
                                             "retriever's share of the fused score (they add up to it).")
    prf: dict[RetrieverName, Prf] | None = Field(
        None, description="Pseudo-relevance feedback per retriever, e.g. {\"bm25\": {\"method\": \"rm3\"}}: that "
                          "retriever searches again with the query expanded from its own top hits.")
    query_mode: dict[RetrieverName, QueryMode] | None = Field(
        None, description="How a retriever turns the query into a query vector, e.g. {\"splade\": \"tokens\", "
                          "\"dense\": \"onnx-int8\"}: 'torch' (the model, as documents were encoded), 'onnx' "
                          "(the same model on ONNX Runtime), 'onnx-int8' (int8 weights), and for SPLADE 'tokens' "
                          "(inference-free: word pieces weighted by the index's IDF). Default: the server's "
                          "query_modes setting, else 'torch'. BM25 has no modes.")
    rerank: Rerank | None = Field(None, description="Re-score the fused top hits with a cross-encoder; with explain, "
                                                   "each hit's before_rerank holds its fused rank and score.")
    include_text: bool = Field(False, description="Add title, text and metadata to every hit.")
    highlight: bool = Field(False, description="Add 'highlight' to every hit: the passage of its text (up to 200 "
                                               "characters) that holds the most query terms, each marked <em>...</em>, "
                                               "matched as BM25 matches them (Anserini's English analyzer: stems, no "
                                               "stop words); null when no query term occurs in the text.")
    filter: dict[str, Any] | None = Field(
        None, description="Metadata filter, applied inside every retriever before its top-k (Lucene filter clause; "
                          "FAISS: the matching documents, scanned exactly when few match): {\"term\": {FIELD: VALUE}}, "
                          "{\"terms\": {FIELD: [VALUES]}}, {\"range\": {FIELD: {\"gte\"|\"gt\"|\"lte\"|\"lt\": V}}} "
                          "(numbers, or dates as ISO 8601 strings), {\"exists\": {\"field\": FIELD}}, and "
                          "{\"and\": [...]}, {\"or\": [...]}, {\"not\": {...}}. Nested metadata is FIELD.SUBFIELD. "
                          "Fields and their types are listed by GET /v1/indexes/{name}; an unknown field or a value "
                          "of the wrong type is answered 422.",
        examples=[{"and": [{"term": {"lang": "en"}}, {"range": {"year": {"gte": 2000}}}]}])


DenseVector = Annotated[list[Annotated[float, Field(allow_inf_nan=False)]], Field(min_length=1, max_length=8192)]
SparseVectorIn = Annotated[dict[Annotated[str, Field(min_length=1, max_length=200)],
                                Annotated[float, Field(ge=0, allow_inf_nan=False)]], Field(min_length=1, max_length=10_000)]


class SearchRequest(SearchOptions):
    query: str = Field("", description="Plain text; Lucene syntax characters are searched as text. May be left out "
                                       "when query_vector/query_sparse give a vector for every retriever searched.")
    query_vector: dict[RetrieverName, DenseVector] | None = Field(
        None, description="A dense query vector per retriever, computed by the client (as Qdrant and Elasticsearch "
                          "take): used instead of encoding the text, scaled to unit length; its dimension must be the "
                          "index's.", examples=[{"dense": [0.01, -0.03, 0.12]}])
    query_sparse: dict[RetrieverName, SparseVectorIn] | None = Field(
        None, description="A learned-sparse query per retriever, {word piece: weight} in the model's float weights "
                          "(quantized as the index's queries are); tokens outside the model's vocabulary are refused.",
        examples=[{"splade": {"wing": 1.2, "flutter": 1.9}}])

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
                },
                {"query": "wing flutter", "k": 10, "offset": 10, "highlight": True},
                {
                    "query": "wing flutter",
                    "fusion": {"method": "weighted", "weights": {"bm25": 0.2, "splade": 0.4, "dense": 0.4},
                               "bounds": {"dense": [0, 1]}},
                    "min_score": 0.5,
                    "explain": True,
                },
                {"retrievers": ["splade"], "query_sparse": {"splade": {"wing": 1.2, "flutter": 1.9}}},
                {"query": "wing flutter", "query_mode": {"splade": "onnx-int8", "dense": "onnx-int8"}},
                {"query": "wing flutter", "filter": {"and": [{"terms": {"tags": ["aero", "wind-tunnel"]}},
                                                             {"range": {"published": {"gte": "1960-01-01"}}}]}},
            ]
        },
    )


class BatchSearchRequest(SearchOptions):
    queries: list[str] = Field(..., min_length=1, description="Up to the server's batch limit (default 1,000).")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"queries": ["heat transfer in slabs", "wing slipstream"], "k": 3}]},
    )


class SearchResponse(BaseModel):
    hits: list[Hit] = Field(..., description="Ranked hits; `explain` gives each retriever's rank and raw score for "
                                             "the hit, or null where that retriever did not return it.")
    took_ms: float
    retrievers: list[str]
    timings_ms: dict[str, float] = Field(default_factory=dict, description="Per-query encode/search/fuse times.")


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


class Ready(BaseModel):
    ready: bool
    indexes: list[str]
    failed: dict[str, str] = Field(default_factory=dict, description="Indexes that could not be loaded, and why.")


# --- live index management -------------------------------------------------------------------------

class DocumentIn(BaseModel):
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


class DeleteDocumentsRequest(BaseModel):
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


class CreateIndexRequest(BaseModel):
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
