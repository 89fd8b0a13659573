"""One search, described once: the request the REST API, the CLI, the library and the harness's specs share.

:class:`SearchRequest` holds everything that describes a search (query, retrievers, fusion, depth, PRF, query
modes, filter, paging, client vectors, rerank, highlight); :class:`BatchSearchRequest` holds many queries with the
same options. The REST schema *is* these models (``service/schemas.py`` re-exports them), the CLI builds its options
from their fields (``service/cli/request_options.py``), ``Searcher.search`` takes them or keywords that build them,
and the harness's method specs parse into them (:mod:`retrieval.search.specs`). So a search option is declared,
documented and checked here alone.

What can be checked without the index is checked here, with the messages users see; what needs the index (which
retrievers it has, which PRF methods and query modes their kinds offer, the filter's field types) is checked when
the searcher runs the request, against the same object.

The one rule that spans fields: **a search names its retrievers once.** ``retrievers`` lists them; without it,
fusion ``weights`` do (a retriever left out of the weights is left out of the search, instead of silently weighing
1), and without either, every retriever of the index is searched. Weights or bounds that name a retriever the
request does not search are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from retrieval.core.errors import HybridError
from retrieval.core.java_text import checked_strings
from retrieval.core.types import PrfConfig

if TYPE_CHECKING:  # the engine's own configs; imported where converted, so the schema stays light (service/client)
    from retrieval.search.fusion import Adaptive, FusionConfig
    from retrieval.search.rerank import RerankConfig

# Retrievers are named per index (bm25, splade, dense, or any name an index was built with); a request
# naming one the index lacks is answered 422 with the index's names, so the schema takes any name.
RetrieverName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", examples=["splade"])]
Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Bound = Annotated[float, Field(allow_inf_nan=False)]
Feature = Literal["nqc", "margin", "agreement"]
Coefficient = Annotated[float, Field(ge=-50, le=50, allow_inf_nan=False)]
QueryMode = Annotated[str, Field(pattern=r"^[a-z0-9-]{1,32}$", examples=["onnx-int8"])]
DenseVector = Annotated[list[Annotated[float, Field(allow_inf_nan=False)]], Field(min_length=1, max_length=8192)]
SparseVectorIn = Annotated[dict[Annotated[str, Field(min_length=1, max_length=200)],
                                Annotated[float, Field(ge=0, allow_inf_nan=False)]], Field(min_length=1, max_length=10_000)]

TEXT_FIELDS = frozenset({"query", "queries"})  # free text: cleaned, never refused
MAX_K = 10_000  # the engine's own ceilings; a server caps requests lower (settings max_k, max_depth)
MAX_DEPTH = 10_000


class SearchError(HybridError, ValueError):
    """A request the index cannot answer as asked; the message says what to fix."""


class SearchTimeout(HybridError, TimeoutError):
    """The request's ``timeout_ms`` passed before any retriever was searched (a later stage only marks the answer
    partial)."""

    http_status = 504


def validation_message(exc: ValidationError, limit: int = 5) -> str:
    """A pydantic error as one line a user can act on (``offset must be >= 0, got -1``), for the first ``limit``
    problems; the REST API, the CLI and the library all report request errors through it."""
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        ctx, given = err.get("ctx") or {}, err.get("input")
        kind = err.get("type", "")
        if kind in _BOUNDS:
            sign, key = _BOUNDS[kind]
            parts.append(f"{where} must be {sign} {ctx.get(key)}, got {given!r}")
        elif kind == "finite_number":
            parts.append(f"{where} must be a finite number")
        else:
            message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            parts.append(f"{where}: {message}" if err.get("loc") not in ((), ("body",)) else message)
    return "; ".join(parts) or "invalid request"


_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("<=", "le"),
           "less_than": ("<", "lt")}


class AdaptiveFusion(BaseModel):
    """QPP-weighted fusion: per-query weights from each retriever's own result list (``hybrid eval beir``
    with a ``qpp:`` method fits them and prints this object)."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    coefficients: dict[Feature, Coefficient] = Field(..., description="theta per feature: a weight is scaled by "
                                                                       "exp(sum theta_f * (feature_f - center_f)).")
    centers: dict[RetrieverName, dict[Feature, Coefficient]] | None = Field(
        None, description="Per retriever, each feature's mean over the training queries (default 0).")

    def config(self) -> Adaptive:
        from retrieval.search.fusion import Adaptive

        return Adaptive(coefficients=dict(self.coefficients),
                        centers={name: dict(c) for name, c in self.centers.items()} if self.centers else None)


class Fusion(BaseModel):
    model_config = ConfigDict(extra="forbid", from_attributes=True)

    method: Literal["rrf", "weighted"] = Field("rrf", description="Reciprocal rank fusion or a weighted score sum.")
    rrf_k: int | None = Field(None, ge=1, le=100_000,
                              description="RRF constant k in 1/(k + rank); default: the server's rrf_k setting (60).")
    weights: dict[RetrieverName, Weight] | None = Field(
        None, description="Per-retriever weights (>= 0, not all 0). Without 'retrievers', the weighted retrievers are "
                          "the ones searched; with 'retrievers', a listed retriever without a weight weighs 1.")
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

    def config(self, default_rrf_k: int) -> FusionConfig:
        """The fusion as :func:`retrieval.search.fusion.fuse` takes it; RRF's k falls back to ``default_rrf_k``."""
        from retrieval.search.fusion import FusionConfig

        return FusionConfig(method=self.method, rrf_k=self.rrf_k if self.rrf_k is not None else default_rrf_k,
                            weights=self.weights, normalization=self.normalization,
                            adaptive=self.adaptive.config() if self.adaptive else None,
                            bounds={n: (float(lo), float(hi)) for n, (lo, hi) in self.bounds.items()}
                            if self.bounds else None)


def _documented_range(low: float, high: float) -> dict[str, Any]:
    """The range a PRF parameter takes, in the schema; the retriever's kind checks it (with the kind's defaults
    filled in, which a request cannot see) and names the retriever in its message."""
    return {"minimum": low, "maximum": high}


class Prf(BaseModel):
    """Pseudo-relevance feedback for one retriever; unset fields take the method's defaults."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    method: str = Field(..., pattern=r"^[a-z0-9_]{1,32}$", examples=["rm3"],
                        description="bm25: rm3 (10 docs, 10 terms, weight 0.5) or rocchio (10/10, alpha 1, "
                                    "beta 0.75), Anserini's own; dense: average (3 docs) or rocchio (5 docs, "
                                    "alpha 0.4, beta 0.6) of stored vectors; splade: rocchio of stored impacts.")
    fb_docs: int | None = Field(None, json_schema_extra=_documented_range(1, 100),
                                description="Feedback documents (top hits).")
    fb_terms: int | None = Field(None, json_schema_extra=_documented_range(1, 1000),
                                 description="Expansion terms (BM25 and SPLADE methods).")
    original_weight: float | None = Field(None, allow_inf_nan=False, json_schema_extra=_documented_range(0, 1),
                                          description="RM3: weight of the original query.")
    alpha: float | None = Field(None, allow_inf_nan=False, json_schema_extra=_documented_range(0, 10),
                                description="Rocchio: weight of the query.")
    beta: float | None = Field(None, allow_inf_nan=False, json_schema_extra=_documented_range(0, 10),
                               description="Rocchio: weight of the feedback documents.")

    def config(self) -> PrfConfig:
        return PrfConfig(**self.model_dump())


class Rerank(BaseModel):
    """Second stage: a cross-encoder re-scores the fused top ``depth`` (title + text) and re-orders them."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    model: str = Field(..., min_length=1, max_length=300, examples=["cross-encoder/ms-marco-MiniLM-L6-v2"],
                       description="A cross-encoder: over HTTP one of the server's rerank_models (HYBRID_RERANK_MODELS); "
                                   "in the library and the CLI a built-in name, folder or hub id.")
    depth: int = Field(50, ge=1, le=1000, description="Fused hits re-scored; offset + k must lie within them, and "
                                                      "the results end there.")
    batch_size: int = Field(32, ge=1, le=1024, description="Pairs per cross-encoder forward pass.")

    def config(self) -> RerankConfig:
        from retrieval.search.rerank import RerankConfig

        return RerankConfig(self.model, self.depth, self.batch_size)


class SearchOptions(BaseModel):
    """Everything about a search but its query text: shared by one query and a batch of them."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(10, ge=1, le=MAX_K, description="Hits to return (a server caps it: max_k, default 1,000).")
    offset: int = Field(0, ge=0, le=10_000, description="Skip this many fused hits: page p of size k is offset=(p-1)*k. "
                                                        "Each retriever fetches max(depth, offset + k) candidates, so a "
                                                        "page equals the same ranks of one larger request.")
    min_score: float | None = Field(None, allow_inf_nan=False, description="Drop hits whose fused score (raw score for "
                                                                           "one retriever) is below this, before paging.")
    retrievers: list[RetrieverName] | None = Field(
        None, min_length=1, description="Subset to run; default: the retrievers fusion.weights names, else every "
                                        "retriever of the index."
    )
    fusion: Fusion = Field(default_factory=Fusion)  # type: ignore[arg-type]
    depth: int | None = Field(None, ge=1, le=MAX_DEPTH,
                              description="Candidates per retriever before fusion; default: the server's depth "
                                          "setting (100); a server caps it (max_depth, default 1,000).")
    exact: bool = Field(False, description="Search every retriever exactly, even where its index has an approximate "
                                           "structure searched by default: SPLADE scores every document of its "
                                           "impact matrix instead of the clusters its tuned 'probes' pick; dense "
                                           "scans its vectors exactly instead of its ANN index (HNSW, IVF); BM25 is "
                                           "always exact. The index's tuning (GET /v1/indexes/{name}: "
                                           "search_tuning) says the recall@10 of the default.")
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
    timeout_ms: int | None = Field(
        None, ge=1, le=600_000,
        description="A deadline for this search, counted from its arrival (time queued on a busy server included) and "
                    "checked between stages: past it, the retrievers, rerank and highlight not yet run are skipped, "
                    "and the answer says \"partial\": true and what was \"skipped\"; past it before any retriever "
                    "ran, the answer is 504.")
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

    @model_validator(mode="before")
    @classmethod
    def _safe_strings(cls, values: Any) -> Any:
        """Query text cleaned, every other string checked (:mod:`retrieval.core.java_text`), before anything else."""
        return checked_strings(values, TEXT_FIELDS) if isinstance(values, dict) else values

    @model_validator(mode="after")
    def _names_once(self) -> SearchOptions:
        """Weights, bounds, PRF and query modes may name only retrievers this request searches."""
        if self.retrievers is not None:
            listed = set(self.retrievers)
            for what, given in (("fusion.weights", self.fusion.weights), ("fusion.bounds", self.fusion.bounds),
                                ("prf", self.prf), ("query_mode", self.query_mode)):
                unknown = [name for name in given or {} if name not in listed]
                if unknown:
                    raise ValueError(f"{what} names {unknown[0]!r}, which this request does not search; it searches "
                                     f"{', '.join(self.retrievers)} (add it to retrievers or leave it out)")
        elif self.fusion.weights:
            weighted = set(self.fusion.weights)
            for what, given in (("fusion.bounds", self.fusion.bounds), ("prf", self.prf),
                                ("query_mode", self.query_mode)):
                unknown = [name for name in given or {} if name not in weighted]
                if unknown:
                    raise ValueError(f"{what} names {unknown[0]!r}, which has no fusion weight, so it is not searched; "
                                     f"give it a weight or list the retrievers to search in 'retrievers'")
        return self

    @classmethod
    def parse(cls, values: dict[str, Any]) -> Any:
        """``cls`` from plain values, with a :class:`SearchError` of one line where they do not fit."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise SearchError(validation_message(exc)) from None

    def named(self) -> list[str] | None:
        """The retrievers this request names (``retrievers``, else the weighted ones); None: every one the index has."""
        wanted = self.retrievers or (list(self.fusion.weights) if self.fusion.weights else None)
        return list(dict.fromkeys(wanted)) if wanted else None

    def searched(self, available: Sequence[str], index: str) -> list[str]:
        """The retrievers this request searches, in order, given the ones index ``index`` has (the rule above)."""
        names = self.named() or list(available)
        for name in names:
            if name not in available:
                raise SearchError(f"retriever {name!r} is not available in index {index!r}; choose from "
                                  f"{', '.join(available)}")
        return names

    def prf_configs(self) -> dict[str, PrfConfig]:
        return {name: p.config() for name, p in (self.prf or {}).items()}


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

    @model_validator(mode="after")
    def _one_vector_each(self) -> SearchRequest:
        both = set(self.query_vector or {}) & set(self.query_sparse or {})
        if both:
            raise ValueError(f"{sorted(both)[0]!r} has both a query_vector and a query_sparse; send one")
        return self

    def options(self) -> SearchOptions:
        """This request without its query: what a batch of queries shares."""
        return SearchOptions.model_validate(self.model_dump(exclude={"query", "query_vector", "query_sparse"}))

    def vectors(self) -> dict[str, list[Any]]:
        """The client's query vectors per retriever, as ``Searcher.batch_search`` takes them (one per query)."""
        return {name: [vector] for given in (self.query_vector, self.query_sparse) for name, vector in (given or {}).items()}


class BatchSearchRequest(SearchOptions):
    queries: list[str] = Field(..., min_length=1, description="Up to the server's batch limit (default 1,000).")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"queries": ["heat transfer in slabs", "wing slipstream"], "k": 3}]},
    )
