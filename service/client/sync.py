"""The blocking client: :class:`HybridClient`, on ``httpx.Client``."""

from __future__ import annotations

import time
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


class HybridClient:
    """A client of the REST API: ``with HybridClient("http://127.0.0.1:8000", api_key=...) as client: ...``.

    Requests are checked by the server's own pydantic models before they are sent, answers come back as them
    (``SearchResponse``, ``IndexInfo``, ...). A 429 or 503 answer, or a connection that never reached the server, is
    retried as ``retry`` says (backoff, Retry-After honoured); ``timeout`` (seconds, or an ``httpx.Timeout``) bounds
    every call and a call's own ``timeout=`` overrides it. With ``check_version`` the constructor asks the server's
    version and warns (:class:`VersionMismatchWarning`) where its major.minor is not the client's. ``api_key``
    defaults to ``$HYBRID_API_KEY``; a search-scoped key is enough for everything but writes, index management and
    jobs.
    """

    def __init__(self, url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float | httpx.Timeout = 30.0,
                 retry: Retry = Retry(), check_version: bool = True, headers: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.retry = retry
        self.server_version: str | None = None
        self._http = httpx.Client(base_url=self.url, headers=_base.client_headers(api_key, headers), timeout=timeout,
                                  transport=transport)
        if check_version:
            self.connect()

    def connect(self) -> str | None:
        """Ask the server's version (``GET /v1/health``), warn on a mismatch, and return it (None: unknown)."""
        try:
            self.server_version = _base.check_version(self._send(Call("GET", "/v1/health")), self.url)
        except ClientError as exc:
            warnings.warn(f"could not check the server's version: {exc}", VersionMismatchWarning, stacklevel=2)
        return self.server_version

    # --- the transport: one call with its retries, and an operation's calls in turn ---------------------------------
    def _send(self, call: Call) -> Any:
        policy = self.retry if call.retry else NO_RETRY
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, json=call.json, params=call.params,
                                              timeout=call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT)
                return _base.decode(response, call)
            except httpx.TransportError as exc:
                error = _base.transport_error(exc, self.url)
            except ClientError as exc:
                error = exc
            wait = policy.delay(attempt, error.retry_after) if _base.retryable(error) else None
            if wait is None:
                raise error
            time.sleep(wait)
            attempt += 1

    def _run(self, op: Op[T]) -> T:
        try:
            step = next(op)
            while True:
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    step = op.send(None)
                else:
                    step = op.send(self._send(step))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    # --- status -------------------------------------------------------------------------------------------------
    def health(self) -> Health:
        return self._run(_base.health())

    def ready(self) -> Ready:
        """Whether every index is loaded (``ready``), and which failed; no retry on 503 (that is the answer)."""
        return self._run(_base.ready())

    # --- search -------------------------------------------------------------------------------------------------
    def search(self, index: str, query: str | SearchRequest = "", *, timeout: float | None = None,
               **options: Any) -> SearchResponse:
        """One query; ``options`` are ``SearchRequest``'s fields (``k``, ``retrievers``, ``fusion``, ``prf``,
        ``explain``, ``filter``, ...), or pass a ``SearchRequest``."""
        return self._run(_base.search(index, query, options, timeout))

    @overload
    def batch_search(self, index: str, queries: Mapping[str, str], *, chunk_size: int = ..., timeout: float | None = ...,
                     **options: Any) -> dict[str, SearchResponse]: ...
    @overload
    def batch_search(self, index: str, queries: Sequence[str], *, chunk_size: int = ..., timeout: float | None = ...,
                     **options: Any) -> list[SearchResponse]: ...

    def batch_search(self, index: str, queries: Mapping[str, str] | Sequence[str], *, chunk_size: int = 100,
                     timeout: float | None = None, **options: Any) -> dict[str, SearchResponse] | list[SearchResponse]:
        """Many queries with the same options, ``chunk_size`` a request: ``{qid: query}`` -> ``{qid: result}``
        (Pyserini's shape; :func:`service.client.as_run` makes it a run for pytrec_eval), a list -> a list."""
        return self._run(_base.batch_search(index, queries, options, chunk_size, timeout))

    # --- writes (admin scope) -----------------------------------------------------------------------------------
    def upsert(self, index: str, documents: Iterable[Any], *, wait: bool = True,
               timeout: float | None = None) -> WriteResponse | JobInfo:
        """Add or replace documents by ``_id`` (dicts with ``_id``, ``title``, ``text``, ``metadata``; ``DocumentIn``;
        or the library's ``Document``). ``wait=False``: the server answers at once with a job."""
        return self._run(_base.upsert(index, documents, wait, timeout))

    def delete(self, index: str, ids: Iterable[str], *, timeout: float | None = None) -> WriteResponse:
        return self._run(_base.delete(index, ids, timeout))

    def bulk_upsert(self, index: str, documents: Iterable[Any], *, chunk_size: int = 500,
                    timeout: float | None = None) -> BulkResult:
        """Any number of documents, ``chunk_size`` a request (within the server's max_write_docs), read lazily."""
        return self._run(_base.bulk_upsert(index, documents, chunk_size, timeout))

    def bulk_delete(self, index: str, ids: Iterable[str], *, chunk_size: int = 1000,
                    timeout: float | None = None) -> BulkResult:
        return self._run(_base.bulk_delete(index, ids, chunk_size, timeout))

    # --- indexes and jobs ---------------------------------------------------------------------------------------
    def list_indexes(self) -> list[IndexInfo]:
        return self._run(_base.list_indexes())

    def get_index(self, name: str) -> IndexInfo:
        return self._run(_base.get_index(name))

    def create_index(self, name: str, *, corpus: str | None = None, retrievers: Sequence[str] | None = None,
                     faiss: str | None = None, on_error: Literal["fail", "skip"] | None = None,
                     timeout: float | None = None) -> IndexInfo | JobInfo:
        """An empty index (``IndexInfo``), or a build from a server-side ``corpus`` (a ``JobInfo``: see
        :meth:`wait_for_job`)."""
        options = {k: v for k, v in {"corpus": corpus, "retrievers": retrievers, "faiss": faiss,
                                     "on_error": on_error}.items() if v is not None}
        return self._run(_base.create_index(name, options, timeout))

    def delete_index(self, name: str) -> None:
        self._run(_base.delete_index(name))

    def reload_index(self, name: str, *, timeout: float | None = None) -> IndexInfo:
        return self._run(_base.reload_index(name, timeout))

    def snapshot(self, name: str, *, timeout: float | None = None) -> SnapshotInfo:
        return self._run(_base.snapshot(name, timeout))

    def list_jobs(self) -> list[JobInfo]:
        return self._run(_base.list_jobs())

    def get_job(self, job_id: str) -> JobInfo:
        return self._run(_base.get_job(job_id))

    def wait_for_job(self, job_id: str, *, timeout: float = 600.0, poll: float = 0.5) -> JobInfo:
        """The job once it has succeeded or failed (check ``state``); RequestTimeoutError after ``timeout`` s."""
        return self._run(_base.wait_for_job(job_id, timeout, poll))

    # --- judgments and the leaderboard (read scope) ---------------------------------------------------------------
    def queries(self, index: str) -> QueryList:
        return self._run(_base.queries(index))

    def qrels(self, index: str, query_id: str | None = None) -> dict[str, dict[str, int]]:
        return self._run(_base.qrels(index, query_id))

    def leaderboard(self) -> Leaderboard:
        return self._run(_base.leaderboard())

    def compare_methods(self, dataset: str, a: str, b: str, metric: str | None = None) -> MethodComparison:
        return self._run(_base.compare_methods(dataset, a, b, metric))

    # --- lifetime -----------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HybridClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
