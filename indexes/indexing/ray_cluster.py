"""Joining a Ray cluster, for builds (:mod:`indexes.indexing.ray_build`) and serving (:mod:`service.ray_serve`).

Ray is imported here only, and only when asked for, so nothing else needs it installed.
"""

from __future__ import annotations

from typing import Any

from retrieval.core.errors import HybridError


class ClusterError(HybridError, RuntimeError):
    """Ray is missing or its cluster cannot be reached; the message says what to do."""


def connect(address: str) -> Any:
    """The ``ray`` module, connected: ``local`` starts a cluster on this machine, ``auto`` joins the one
    ``ray start`` runs here, anything else is a cluster address. A connection already made is reused."""
    try:
        import ray
    except ImportError:
        raise ClusterError("--ray needs Ray; install it with: pip install 'hybrid-retrieval[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=None if address == "local" else address, include_dashboard=False,
                     configure_logging=False, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ClusterError(f"cannot reach the Ray cluster {address!r} ({exc}); start one with 'ray start --head' "
                               "or use --ray local") from None
    return ray
