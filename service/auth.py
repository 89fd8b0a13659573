"""Bearer keys with two scopes: search (search keys and admin keys) and admin (changing indexes).

The keys, stored as SHA-256 digests and rotated through a keys file without a restart, are :mod:`service.keys`'s;
with no key configured at all, auth is off.
"""

from __future__ import annotations

from fastapi import Request

from service.errors import ApiError
from service.state import state_of


def _token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'")
    return token


async def require_key(request: Request) -> None:
    """Search scope: a search key or an admin key."""
    keys = state_of(request).keys
    if keys.enabled and keys.scope_of(_token(request)) is None:
        raise ApiError(403, "API key not accepted")


async def require_admin(request: Request) -> None:
    """Admin scope: anything that changes or reloads an index."""
    keys = state_of(request).keys
    if not keys.enabled:
        return
    scope = keys.scope_of(_token(request))
    if scope != "admin":
        raise ApiError(403, "this operation needs an admin key" if scope == "search" else "API key not accepted")
