"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from service import metrics
from service.admission import draining
from service.auth import require_key
from service.errors import ERRORS
from service.schemas import Health, Ready
from service.state import ServiceState, get_state
from service.version import VERSION

router = APIRouter(tags=["status"])


@router.get("/v1/health", response_model=Health)
async def health() -> Health:
    """The process is up (no auth), and its version."""
    return Health(version=VERSION)


@router.get("/v1/ready", response_model=Ready, dependencies=[Depends(require_key)], responses=ERRORS)
async def ready(state: ServiceState = Depends(get_state)) -> JSONResponse:
    """Indexes are loaded and warmed; 503 until then, and again once the server drains (SIGTERM)."""
    registry = state.registry
    ready = registry.ready and not draining()
    body = Ready(ready=ready, indexes=sorted(registry.indexes), failed=registry.failed)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", dependencies=[Depends(require_key)], include_in_schema=False)
async def prometheus(state: ServiceState = Depends(get_state)) -> Response:
    return Response(state.stats.render(), media_type=metrics.CONTENT_TYPE)
