"""Single and batch search over any subset of an index's named retrievers, fused."""

from __future__ import annotations

import asyncio
import time
from dataclasses import fields, is_dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import Response

from indexes.indexing.views import IndexFailedError
from retrieval.search.fusion import FusionError
from retrieval.search.pipeline import SearchError, SearchResult, clean_query
from service.auth import require_key
from service.errors import SEARCH_ERRORS, ApiError
from service.schemas import (
    BatchSearchRequest,
    BatchSearchResponse,
    SearchOptions,
    SearchRequest,
    SearchResponse,
)
from service.state import ServiceState, get_state

router = APIRouter(tags=["search"], dependencies=[Depends(require_key)])


def _check_queries(state: ServiceState, queries: list[str], text_optional: bool = False) -> None:
    settings = state.settings
    if len(queries) > settings.max_batch_queries:
        raise ApiError(413, f"batch of {len(queries)} queries; the limit is {settings.max_batch_queries}")
    for i, q in enumerate(queries):
        if len(q) > settings.max_query_chars:
            raise ApiError(413, f"query {i} has {len(q)} characters; the limit is {settings.max_query_chars}")
        if not text_optional and not clean_query(q).strip():
            raise ApiError(422, f"query {i} is empty or whitespace; send some text to search for")


async def run_search(state: ServiceState, name: str, queries: list[str], options: SearchOptions,
                     vectors: dict[str, list[Any]] | None = None) -> list[SearchResult]:
    """``options`` for ``queries`` on index ``name``: the server's limits first, then a slot (admission control:
    429/503 at once when the server is full or draining), then the searcher (which checks the request against the
    index); a lone query waits briefly for company in the micro-batcher. ``timeout_ms`` counts from here."""
    arrived = time.perf_counter()
    deadline = arrived + options.timeout_ms / 1000.0 if options.timeout_ms is not None else None
    live = state.index_for(name)
    _check_queries(state, queries, text_optional=bool(vectors))
    settings = state.settings
    for field, value, cap in (("k", options.k, settings.max_k), ("depth", options.depth, settings.max_depth)):
        if value is not None and value > cap:
            raise ApiError(422, f"{field} must be <= {cap} on this server (max_{field}), got {value}")
    if options.rerank is not None and options.rerank.model not in settings.rerank_models:
        allowed = ", ".join(settings.rerank_models) or "none (start the server with HYBRID_RERANK_MODELS)"
        raise ApiError(422, f"rerank model {options.rerank.model!r} is not one this server offers: {allowed}")

    def work(batch: list[str]) -> list[SearchResult]:
        given = {n: v * len(batch) for n, v in vectors.items()} if vectors else None  # batch-mates share the key
        with live.view() as searcher:  # one point in time for every retriever and the text lookup
            return searcher.batch_search(batch, options, vectors=given, deadline=deadline)

    try:
        async with state.admission.slot(deadline):
            if len(queries) == 1 and settings.micro_batch_max > 1:
                # Batch-mates share the first one's deadline: the earliest, as their timeout_ms is the same.
                key = (name, id(live), options.model_dump_json(exclude={"query"}))
                results = [await state.batcher.submit(queries[0], key, work)]
            else:
                results = await asyncio.get_running_loop().run_in_executor(state.registry.executor, work, queries)
    except (SearchError, FusionError) as exc:
        raise ApiError(422, str(exc)) from None
    except IndexFailedError:
        raise ApiError(503, f"index {name!r} is being reloaded or removed; retry") from None
    for result in results:
        state.stats.observe_search(name, result)
    return results


def _plain(value: Any) -> Any:
    """A value as ``SearchResponse`` serializes it with ``exclude_none``: dataclass fields that are None are left
    out; None inside a mapping stays (in ``explain``, null: that retriever did not return the hit)."""
    if is_dataclass(value):
        return {f.name: _plain(v) for f in fields(value) if (v := getattr(value, f.name)) is not None}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_payload(result: SearchResult) -> dict[str, Any]:
    payload = {"hits": [_plain(h) for h in result.hits], "took_ms": result.took_ms, "retrievers": result.retrievers,
               "timings_ms": result.timings_ms}
    if result.skipped:
        payload.update(partial=True, skipped=result.skipped)
    return payload


class FastJSON(Response):
    """Search responses are built from our own dataclasses, so they skip the response model's re-validation
    and go straight to orjson (the response model still documents them in the OpenAPI schema)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


@router.post("/v1/indexes/{name}/search", response_model=SearchResponse, response_model_exclude_none=True,
             responses=SEARCH_ERRORS)
async def search(name: str, request: SearchRequest, state: ServiceState = Depends(get_state)) -> Response:
    """Search one index with any subset of its retrievers (by name), fused."""
    results = await run_search(state, name, [request.query], request, request.vectors())
    return FastJSON(to_payload(results[0]))


@router.post("/v1/indexes/{name}/search/batch", response_model=BatchSearchResponse, response_model_exclude_none=True,
             responses=SEARCH_ERRORS)
async def batch_search(name: str, request: BatchSearchRequest, state: ServiceState = Depends(get_state)) -> Response:
    """Many queries in one request, encoded in batches."""
    started = time.perf_counter()
    results = await run_search(state, name, request.queries, request)
    return FastJSON({"results": [to_payload(r) for r in results], "took_ms": (time.perf_counter() - started) * 1000.0})
