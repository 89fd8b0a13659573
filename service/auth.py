"""Bearer keys with two scopes: search (search keys and admin keys) and admin (changing indexes).

With no key configured at all, auth is off. Keys are compared in constant time against every key.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from service.errors import ApiError
from service.state import state_of


def _matches(token: str, keys: list[str]) -> bool:
    found = False
    for key in keys:
        found |= hmac.compare_digest(token.encode(), key.encode())
    return found


def _token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'")
    return token


async def require_key(request: Request) -> None:
    """Search scope: a search key or an admin key."""
    settings = state_of(request).settings
    if (settings.api_keys or settings.admin_keys) and not _matches(_token(request), settings.api_keys + settings.admin_keys):
        raise ApiError(403, "API key not accepted")


async def require_admin(request: Request) -> None:
    """Admin scope: anything that changes or reloads an index."""
    settings = state_of(request).settings
    if not (settings.api_keys or settings.admin_keys):
        return
    token = _token(request)
    if _matches(token, settings.admin_keys):
        return
    raise ApiError(403, "this operation needs an admin key" if _matches(token, settings.api_keys) else "API key not accepted")
