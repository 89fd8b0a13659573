"""The service's faces: the REST API (:func:`create_app`, served by ``hybrid serve``) and the ``hybrid`` CLI.

    import uvicorn
    from service import create_app

    uvicorn.run(create_app(), port=8000)   # every index under $HYBRID_INDEX_ROOT
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["create_app"]

if TYPE_CHECKING:
    from service.app import create_app


def __getattr__(name: str) -> Any:
    """``create_app`` on first use, so the CLI starts without importing FastAPI."""
    if name == "create_app":
        from service.app import create_app

        return create_app
    raise AttributeError(f"module 'service' has no attribute {name!r}")
