"""Joining a Ray cluster, for builds (:mod:`indexes.indexing.ray_build`) and serving (:mod:`service.ray_serve`).

Ray is imported here only, and only when asked for, so nothing else needs it installed.
"""

from __future__ import annotations

from typing import Any

from retrieval.core.errors import HybridError


class ClusterError(HybridError, RuntimeError):
    """Ray is missing or its cluster cannot be reached; the message says what to do."""


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse a cluster address nothing answers at, in seconds: ``ray.init`` retries an unreachable head for
    minutes before it gives up."""
    import socket

    if address in ("local", "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"Ray address {address!r} is not HOST:PORT (or ray://HOST:PORT, local, auto)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); is 'ray start --head' "
                           "running there?") from None


def connect(address: str) -> Any:
    """The ``ray`` module, connected: ``local`` starts a cluster on this machine, ``auto`` joins the one
    ``ray start`` runs here, anything else is a cluster address. A connection already made is reused."""
    try:
        import ray
    except ImportError:
        raise ClusterError("--ray needs Ray; install it with: pip install 'hybrid-retrieval[ray]'") from None
    if not ray.is_initialized():
        check_reachable(address)
        try:
            ray.init(address=None if address == "local" else address, include_dashboard=False,
                     configure_logging=False, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ClusterError(f"cannot reach the Ray cluster {address!r} ({exc}); start one with 'ray start --head' "
                               "or use --ray local") from None
    return ray


def root_cause(exc: BaseException) -> BaseException:
    """The error a Ray worker or replica raised, out of the Ray errors wrapped around it (a user error such as a bad
    document or a missing model comes back as itself, with its HTTP status and exit code)."""
    import ray

    cause = exc
    while isinstance(cause, ray.exceptions.RayError) and getattr(cause, "cause", None) is not None:
        cause = cause.cause
    return cause

