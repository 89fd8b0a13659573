"""What the workbench (``/ui``) reads besides searches, read scope: an index's judged queries and qrels (when it was
built from a BEIR folder), and the harness's leaderboard with per-query comparisons of two methods."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query

from eval.judgments import Judgments, judgments_for
from eval.leaderboard_data import compare_methods, read_leaderboard
from retrieval.core.errors import HybridError
from service.auth import require_key
from service.errors import ERRORS, ApiError, api_error
from service.schemas import JudgedQuery, Leaderboard, MethodComparison, QrelsResponse, QueryList, QueryOutcome
from service.state import ServiceState, get_state

router = APIRouter(tags=["evaluation"], dependencies=[Depends(require_key)])


async def _off_loop(fn: Any, *args: Any) -> Any:
    """File reads (a first read of a large qrels file, a p-value) off the event loop; user errors as responses."""
    try:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
    except HybridError as exc:
        raise api_error(exc) from None


async def _judgments(state: ServiceState, name: str) -> Judgments:
    live = state.index_for(name)
    return await _off_loop(judgments_for, name, live.manifest.corpus_path)  # type: ignore[no-any-return]


@router.get("/v1/indexes/{name}/queries", response_model=QueryList, responses=ERRORS)
async def list_queries(name: str, state: ServiceState = Depends(get_state)) -> QueryList:
    """The judged queries of the BEIR folder the index was built from; 404 when it was built from something else."""
    found = await _judgments(state, name)
    return QueryList(index=name, dataset=found.dataset, split=found.split,
                     queries=[JudgedQuery(id=qid, text=text, relevant=sum(1 for g in found.qrels[qid].values() if g > 0))
                              for qid, text in found.queries.items()])


@router.get("/v1/indexes/{name}/qrels", response_model=QrelsResponse, responses=ERRORS)
async def get_qrels(name: str, query_id: str | None = Query(None, max_length=1024, description="One query's "
                    "judgments; absent: every query's."), state: ServiceState = Depends(get_state)) -> QrelsResponse:
    """Graded judgments (query id -> document id -> grade) of the BEIR folder the index was built from."""
    found = await _judgments(state, name)
    if query_id is None:
        return QrelsResponse(index=name, judgments=found.qrels)
    if query_id not in found.qrels:
        raise ApiError(404, f"no judgments for query {query_id[:100]!r} in {found.dataset!r} ({found.split})")
    return QrelsResponse(index=name, judgments={query_id: found.qrels[query_id]})


@router.get("/v1/leaderboard", response_model=Leaderboard, responses=ERRORS)
async def leaderboard(state: ServiceState = Depends(get_state)) -> Leaderboard:
    """The harness's leaderboard (``hybrid eval beir --out``, served from the reports_root setting)."""
    return Leaderboard.model_validate(await _off_loop(read_leaderboard, state.settings.reports_root))


def _compare(state: ServiceState, dataset: str, a: str, b: str, metric: str | None) -> MethodComparison:
    from eval.significance import paired_randomization

    found = compare_methods(state.settings.reports_root, dataset, a, b, metric)
    values = found.per_query
    n = max(len(values), 1)
    return MethodComparison(
        dataset=dataset, metric=found.metric, a=a, b=b, mean_a=sum(x for x, _ in values.values()) / n,
        mean_b=sum(y for _, y in values.values()) / n, wins=found.wins, losses=found.losses, ties=found.ties,
        p_value=paired_randomization({q: x for q, (x, _) in values.items()}, {q: y for q, (_, y) in values.items()}),
        queries=[QueryOutcome(id=q, a=x, b=y) for q, (x, y) in values.items()])


@router.get("/v1/leaderboard/compare", response_model=MethodComparison, responses=ERRORS)
async def compare(dataset: str = Query(..., max_length=300), a: str = Query(..., max_length=1000),
                  b: str = Query(..., max_length=1000), metric: str | None = Query(None, max_length=50),
                  state: ServiceState = Depends(get_state)) -> MethodComparison:
    """Methods ``a`` and ``b`` of the leaderboard on ``dataset``, query by query: wins, losses, ties and the p-value
    of the difference (default metric: the run's primary)."""
    return await _off_loop(_compare, state, dataset, a, b, metric)  # type: ignore[no-any-return]
