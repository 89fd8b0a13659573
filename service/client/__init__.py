"""A Python client of the REST API, sync and async, on httpx:

    from service.client import HybridClient

    with HybridClient("http://127.0.0.1:8000", api_key="...") as client:
        hits = client.search("cranfield", "wing flutter", k=5, explain=True).hits
        results = client.batch_search("cranfield", {"q1": "boundary layer", "q2": "heat transfer"})  # {qid: result}

The request and response models are the server's own (``service/schemas.py``: ``SearchRequest``, ``SearchResponse``,
``IndexInfo``, ...), so a request the client sends passed the checks the server runs. Importing this package loads
httpx and pydantic, not the engine (no torch, Java, FAISS or model): it runs on machines that have none of them.
docs/client.md has the rest.
"""

from __future__ import annotations

from service.client._base import BulkResult, Retry, as_run
from service.client.async_ import AsyncHybridClient
from service.client.errors import (
    ApiKeyError,
    ClientError,
    ConflictError,
    ConnectionFailedError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    RequestTimeoutError,
    ServerError,
    VersionMismatchWarning,
)
from service.client.sync import HybridClient
from service.version import VERSION as __version__

__all__ = [
    "ApiKeyError", "AsyncHybridClient", "BulkResult", "ClientError", "ConflictError", "ConnectionFailedError",
    "HybridClient", "InvalidRequestError", "NotFoundError", "OverloadedError", "RequestTimeoutError", "Retry",
    "ServerError", "VersionMismatchWarning", "__version__", "as_run",
]
