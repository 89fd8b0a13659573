"""Single and batch search over any subset of an index's named retrievers, fused."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends

from indexes.indexing.live import IndexFailedError
from retrieval.core.types import PrfConfig
from retrieval.search.fusion import Adaptive, FusionConfig, FusionError
from retrieval.search.pipeline import SearchError, SearchResult, clean_query
from service.auth import require_key
from service.errors import ERRORS, ApiError
from service.schemas import (
    AdaptiveFusion,
    BatchSearchRequest,
    BatchSearchResponse,
    SearchOptions,
    SearchRequest,
    SearchResponse,
)
from service.state import ServiceState, get_state

router = APIRouter(tags=["search"], dependencies=[Depends(require_key)])


def _check_queries(state: ServiceState, queries: list[str]) -> None:
    settings = state.settings
    if len(queries) > settings.max_batch_queries:
        raise ApiError(413, f"batch of {len(queries)} queries; the limit is {settings.max_batch_queries}")
    for i, q in enumerate(queries):
        if len(q) > settings.max_query_chars:
            raise ApiError(413, f"query {i} has {len(q)} characters; the limit is {settings.max_query_chars}")
        if not clean_query(q).strip():
            raise ApiError(422, f"query {i} is empty or whitespace; send some text to search for")


def adaptive_config(adaptive: AdaptiveFusion | None) -> Adaptive | None:
    if adaptive is None:
        return None
    return Adaptive(coefficients=dict(adaptive.coefficients),
                    centers={name: dict(c) for name, c in adaptive.centers.items()} if adaptive.centers else None)


async def run_search(state: ServiceState, name: str, queries: list[str], options: SearchOptions) -> list[SearchResult]:
    live = state.index_for(name)
    _check_queries(state, queries)
    settings = state.settings
    fusion = FusionConfig(method=options.fusion.method,
                          rrf_k=options.fusion.rrf_k if options.fusion.rrf_k is not None else settings.rrf_k,
                          weights=options.fusion.weights, normalization=options.fusion.normalization,
                          adaptive=adaptive_config(options.fusion.adaptive))

    prf = {name: PrfConfig(**p.model_dump()) for name, p in options.prf.items()} if options.prf else None

    def work(batch: list[str]) -> list[SearchResult]:
        with live.view() as searcher:  # one point in time for every retriever and the text lookup
            return searcher.batch_search(batch, k=options.k, retrievers=options.retrievers, fusion=fusion,
                                         depth=options.depth, explain=options.explain,
                                         include_text=options.include_text, prf=prf)

    try:
        if len(queries) == 1 and settings.micro_batch_max > 1:
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


def to_response(result: SearchResult) -> SearchResponse:
    return SearchResponse(hits=result.hits, took_ms=result.took_ms, retrievers=result.retrievers,
                          timings_ms=result.timings_ms)


@router.post("/v1/indexes/{name}/search", response_model=SearchResponse, response_model_exclude_none=True,
             responses=ERRORS)
async def search(name: str, request: SearchRequest, state: ServiceState = Depends(get_state)) -> SearchResponse:
    """Search one index with any subset of its retrievers (by name), fused."""
    results = await run_search(state, name, [request.query], request)
    return to_response(results[0])


@router.post("/v1/indexes/{name}/search/batch", response_model=BatchSearchResponse, response_model_exclude_none=True,
             responses=ERRORS)
async def batch_search(name: str, request: BatchSearchRequest,
                       state: ServiceState = Depends(get_state)) -> BatchSearchResponse:
    """Many queries in one request, encoded in batches."""
    started = time.perf_counter()
    results = await run_search(state, name, request.queries, request)
    return BatchSearchResponse(results=[to_response(r) for r in results], took_ms=(time.perf_counter() - started) * 1000.0)
