"""The asyncio client: :class:`AsyncHybridClient`, on ``httpx.AsyncClient``; the same operations as
:class:`~service.client.sync.HybridClient`, awaited."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

import httpx

from service.client import _base
from service.client._base import DEFAULT_URL, NO_RETRY, BulkResult, Call, Op, Retry, Sleep
from service.client.errors import ClientError, VersionMismatchWarning
from service.schemas import (
    Health,
    IndexInfo,
    JobInfo,
    Leaderboard,
    MethodComparison,
    QueryList,
    Ready,
    SearchRequest,
    SearchResponse,
    SnapshotInfo,
    WriteResponse,
)

T = TypeVar("T")


class AsyncHybridClient:
    """A client of the REST API: ``async with AsyncHybridClient("http://127.0.0.1:8000", api_key=...) as client:``.

    Requests are checked by the server's own pydantic models before they are sent, answers come back as them
    (``SearchResponse``, ``IndexInfo``, ...). A 429 or 503 answer, or a connection that never reached the server, is
    retried as ``retry`` says (backoff, Retry-After honoured); ``timeout`` (seconds, or an ``httpx.Timeout``) bounds
    every call and a call's own ``timeout=`` overrides it. With ``check_version``, ``async with`` (or the first call)
    asks the server's version and warns (:class:`VersionMismatchWarning`) where its major.minor is not the client's. ``api_key``
    defaults to ``$HYBRID_API_KEY``; a search-scoped key is enough for everything but writes, index management and
    jobs.
    """

    def __init__(self, url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float | httpx.Timeout = 30.0,
                 retry: Retry = Retry(), check_version: bool = True, headers: Mapping[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.retry = retry
        self.server_version: str | None = None
        self._http = httpx.AsyncClient(base_url=self.url, headers=_base.client_headers(api_key, headers), timeout=timeout,
                                  transport=transport)
        self._unchecked = check_version

    async def connect(self) -> str | None:
        """Ask the server's version (``GET /v1/health``), warn on a mismatch, and return it (None: unknown)."""
        try:
            self._unchecked = False
            self.server_version = _base.check_version(await self._send(Call("GET", "/v1/health")), self.url)
        except ClientError as exc:
            warnings.warn(f"could not check the server's version: {exc}", VersionMismatchWarning, stacklevel=2)
        return self.server_version

    # --- the transport: one call with its retries, and an operation's calls in turn ---------------------------------
    async def _send(self, call: Call) -> Any:
        policy = self.retry if call.retry else NO_RETRY
        attempt = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, json=call.json, params=call.params,
                                              timeout=call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT)
                return _base.decode(response, call)
            except httpx.TransportError as exc:
                error = _base.transport_error(exc, self.url)
            except ClientError as exc:
                error = exc
            wait = policy.delay(attempt, error.retry_after) if _base.retryable(error) else None
            if wait is None:
                raise error
            await asyncio.sleep(wait)
            attempt += 1

    async def _run(self, op: Op[T]) -> T:
        if self._unchecked:
            await self.connect()
        try:
            step = next(op)
            while True:
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                    step = op.send(None)
                else:
                    step = op.send(await self._send(step))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    # --- status -------------------------------------------------------------------------------------------------
    async def health(self) -> Health:
        return await self._run(_base.health())

    async def ready(self) -> Ready:
        """Whether every index is loaded (``ready``), and which failed; no retry on 503 (that is the answer)."""
        return await self._run(_base.ready())

    # --- search -------------------------------------------------------------------------------------------------
    async def search(self, index: str, query: str | SearchRequest = "", *, timeout: float | None = None,
               **options: Any) -> SearchResponse:
        """One query; ``options`` are ``SearchRequest``'s fields (``k``, ``retrievers``, ``fusion``, ``prf``,
        ``explain``, ``filter``, ...), or pass a ``SearchRequest``."""
        return await self._run(_base.search(index, query, options, timeout))

    @overload
    async def batch_search(self, index: str, queries: Mapping[str, str], *, chunk_size: int = ..., timeout: float | None = ...,
                     **options: Any) -> dict[str, SearchResponse]: ...
    @overload
    async def batch_search(self, index: str, queries: Sequence[str], *, chunk_size: int = ..., timeout: float | None = ...,
                     **options: Any) -> list[SearchResponse]: ...

    async def batch_search(self, index: str, queries: Mapping[str, str] | Sequence[str], *, chunk_size: int = 100,
                     timeout: float | None = None, **options: Any) -> dict[str, SearchResponse] | list[SearchResponse]:
        """Many queries with the same options, ``chunk_size`` a request: ``{qid: query}`` -> ``{qid: result}``
        (Pyserini's shape; :func:`service.client.as_run` makes it a run for pytrec_eval), a list -> a list."""
        return await self._run(_base.batch_search(index, queries, options, chunk_size, timeout))

    # --- writes (admin scope) -----------------------------------------------------------------------------------
    async def upsert(self, index: str, documents: Iterable[Any], *, wait: bool = True,
               timeout: float | None = None) -> WriteResponse | JobInfo:
        """Add or replace documents by ``_id`` (dicts with ``_id``, ``title``, ``text``, ``metadata``; ``DocumentIn``;
        or the library's ``Document``). ``wait=False``: the server answers at once with a job."""
        return await self._run(_base.upsert(index, documents, wait, timeout))

    async def delete(self, index: str, ids: Iterable[str], *, timeout: float | None = None) -> WriteResponse:
        return await self._run(_base.delete(index, ids, timeout))

    async def bulk_upsert(self, index: str, documents: Iterable[Any], *, chunk_size: int = 500,
                    timeout: float | None = None) -> BulkResult:
        """Any number of documents, ``chunk_size`` a request (within the server's max_write_docs), read lazily."""
        return await self._run(_base.bulk_upsert(index, documents, chunk_size, timeout))

    async def bulk_delete(self, index: str, ids: Iterable[str], *, chunk_size: int = 1000,
                    timeout: float | None = None) -> BulkResult:
        return await self._run(_base.bulk_delete(index, ids, chunk_size, timeout))

    # --- indexes and jobs ---------------------------------------------------------------------------------------
    async def list_indexes(self) -> list[IndexInfo]:
        return await self._run(_base.list_indexes())

    async def get_index(self, name: str) -> IndexInfo:
        return await self._run(_base.get_index(name))

    async def create_index(self, name: str, *, corpus: str | None = None, retrievers: Sequence[str] | None = None,
                     faiss: str | None = None, on_error: Literal["fail", "skip"] | None = None,
                     timeout: float | None = None) -> IndexInfo | JobInfo:
        """An empty index (``IndexInfo``), or a build from a server-side ``corpus`` (a ``JobInfo``: see
        :meth:`wait_for_job`)."""
        options = {k: v for k, v in {"corpus": corpus, "retrievers": retrievers, "faiss": faiss,
                                     "on_error": on_error}.items() if v is not None}
        return await self._run(_base.create_index(name, options, timeout))

    async def delete_index(self, name: str) -> None:
        await self._run(_base.delete_index(name))

    async def reload_index(self, name: str, *, timeout: float | None = None) -> IndexInfo:
        return await self._run(_base.reload_index(name, timeout))

    async def snapshot(self, name: str, *, timeout: float | None = None) -> SnapshotInfo:
        return await self._run(_base.snapshot(name, timeout))

    async def list_jobs(self) -> list[JobInfo]:
        return await self._run(_base.list_jobs())

    async def get_job(self, job_id: str) -> JobInfo:
        return await self._run(_base.get_job(job_id))

    async def wait_for_job(self, job_id: str, *, timeout: float = 600.0, poll: float = 0.5) -> JobInfo:
        """The job once it has succeeded or failed (check ``state``); RequestTimeoutError after ``timeout`` s."""
        return await self._run(_base.wait_for_job(job_id, timeout, poll))

    # --- judgments and the leaderboard (read scope) ---------------------------------------------------------------
    async def queries(self, index: str) -> QueryList:
        return await self._run(_base.queries(index))

    async def qrels(self, index: str, query_id: str | None = None) -> dict[str, dict[str, int]]:
        return await self._run(_base.qrels(index, query_id))

    async def leaderboard(self) -> Leaderboard:
        return await self._run(_base.leaderboard())

    async def compare_methods(self, dataset: str, a: str, b: str, metric: str | None = None) -> MethodComparison:
        return await self._run(_base.compare_methods(dataset, a, b, metric))

    # --- lifetime -----------------------------------------------------------------------------------------------
    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncHybridClient:
        if self._unchecked:
            await self.connect()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()
