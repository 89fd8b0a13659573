"""What the sync and async clients share: each operation written once, as a generator of HTTP calls.

An operation (``search``, ``bulk_upsert``, ``wait_for_job``, ...) checks its input with the server's own request
models, yields :class:`Call` objects (and :class:`Sleep` for polling), receives each call's decoded JSON and returns
the server's typed response model. :class:`~service.client.sync.HybridClient` drives it with httpx's blocking client,
:class:`~service.client.async_.AsyncHybridClient` with its async one; both retry through the one :class:`Retry`
policy. Nothing here imports the engine: the models are ``service/schemas.py``'s (pydantic and two dataclass
modules), so the client runs where no torch, Java or FAISS is installed.
"""

from __future__ import annotations

import email.utils
import itertools
import os
import random
import re
import time
import warnings
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from retrieval.search.request import validation_message
from service.client.errors import (
    ClientError,
    ConnectionFailedError,
    InvalidRequestError,
    RequestTimeoutError,
    VersionMismatchWarning,
    error_for,
)
from service.schemas import (
    BatchSearchRequest,
    CreateIndexRequest,
    DeleteDocumentsRequest,
    Health,
    IndexInfo,
    IndexList,
    JobInfo,
    JobList,
    Leaderboard,
    MethodComparison,
    QrelsResponse,
    QueryList,
    Ready,
    SearchRequest,
    SearchResponse,
    SnapshotInfo,
    UpsertRequest,
    WriteResponse,
)
from service.version import VERSION

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = frozenset({429, 503})
T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: Any = None
    params: Mapping[str, str] | None = None
    ok: tuple[int, ...] = (200,)
    retry: bool = True
    timeout: float | None = None  # None: the client's


@dataclass(frozen=True)
class Sleep:
    seconds: float


Op = Generator[Call | Sleep, Any, T]


@dataclass(frozen=True)
class Retry:
    """Retries of a call the server answered 429 or 503 (admission control, an index being reloaded), or could not
    be reached at all: up to ``attempts`` tries in all, waiting ``backoff * 2**n`` seconds (with +-``jitter``,
    at most ``max_backoff``) between them, or exactly what the server's Retry-After asks. A Retry-After longer than
    ``max_backoff`` is not waited out: the call fails at once with :class:`OverloadedError` (``retry_after`` set)."""

    attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 30.0
    jitter: float = 0.1

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 0), or None: give up."""
        if attempt + 1 >= self.attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_backoff else None
        wait = min(self.backoff * 2**attempt, self.max_backoff)
        return max(0.0, wait * (1 + random.uniform(-self.jitter, self.jitter)))


NO_RETRY = Retry(attempts=1)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds, or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def decode(response: httpx.Response, call: Call) -> Any:
    """The JSON of an expected answer, or the client error its status and ``{"error": ...}`` body say."""
    if response.status_code in call.ok:
        return response.json() if response.content else None
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:300] or response.reason_phrase
    raise error_for(response.status_code, message, parse_retry_after(response.headers.get("retry-after")))


def transport_error(exc: httpx.TransportError, url: str) -> ClientError:
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeoutError(0, f"no answer from {url} within the timeout ({type(exc).__name__})")
    return ConnectionFailedError(0, f"could not reach {url}: {exc}")


def retryable(exc: ClientError) -> bool:
    """Answers the server asks to retry, and connections that never reached it (the request was not sent)."""
    return exc.status in RETRY_STATUSES or isinstance(exc, ConnectionFailedError)


def client_headers(api_key: str | None, headers: Mapping[str, str] | None) -> dict[str, str]:
    key = api_key if api_key is not None else os.environ.get("HYBRID_API_KEY")
    out = {"User-Agent": f"hybrid-retrieval-client/{VERSION}", "Accept": "application/json", **(headers or {})}
    if key:
        out["Authorization"] = f"Bearer {key}"
    return out


def _major_minor(version: str) -> tuple[int, ...] | None:
    parts = re.match(r"(\d+)\.(\d+)", version)
    return (int(parts.group(1)), int(parts.group(2))) if parts else None


def check_version(health: Any, url: str) -> str | None:
    """The server's version from ``GET /v1/health``; a :class:`VersionMismatchWarning` where its major.minor is not
    the client's (or it reports none)."""
    server = health.get("version") if isinstance(health, dict) else None
    if not server:
        warnings.warn(f"the server at {url} does not report its version (older than this client, {VERSION}?)",
                      VersionMismatchWarning, stacklevel=4)
        return None
    mine, theirs = _major_minor(VERSION), _major_minor(server)
    if mine and theirs and mine != theirs:
        warnings.warn(f"client version {VERSION} and server version {server} at {url} differ; requests or answers "
                      "may not match", VersionMismatchWarning, stacklevel=4)
    return str(server)


def _model(cls: type[BaseModel], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` checked by the server's own request model (same rules, same messages), as the JSON body."""
    try:
        return cls.model_validate(dict(values)).model_dump(mode="json", by_alias=True, exclude_unset=True)
    except ValidationError as exc:
        raise InvalidRequestError(422, validation_message(exc)) from None


def _index(name: str, *rest: str) -> str:
    return "/v1/indexes/" + quote(name, safe="") + "".join(f"/{part}" for part in rest)


def chunks(items: Iterable[T], size: int) -> Iterable[list[T]]:
    if size < 1:
        raise InvalidRequestError(422, f"chunk_size must be >= 1, got {size}")
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


# --- operations -------------------------------------------------------------------------------------------------------

def health() -> Op[Health]:
    return Health.model_validate((yield Call("GET", "/v1/health")))


def ready() -> Op[Ready]:
    """503 is an answer here (indexes still loading), not a reason to retry."""
    return Ready.model_validate((yield Call("GET", "/v1/ready", ok=(200, 503), retry=False)))


def search(index: str, query: str | SearchRequest, options: Mapping[str, Any], timeout: float | None) -> Op[SearchResponse]:
    if isinstance(query, SearchRequest):
        values = {**query.model_dump(exclude_unset=True), **options}
    else:
        values = {"query": query, **options}
    body = _model(SearchRequest, values)
    return SearchResponse.model_validate((yield Call("POST", _index(index, "search"), body, timeout=timeout)))


def batch_search(index: str, queries: Mapping[str, str] | Sequence[str], options: Mapping[str, Any], chunk_size: int,
                 timeout: float | None) -> Op[dict[str, SearchResponse] | list[SearchResponse]]:
    """``{qid: query}`` -> ``{qid: result}`` (a list of queries -> a list of results), ``chunk_size`` queries a call."""
    keyed = isinstance(queries, Mapping)
    ids = list(queries) if keyed else list(range(len(queries)))
    texts = [queries[i] for i in ids] if keyed else list(queries)  # type: ignore[index]
    _model(BatchSearchRequest, {"queries": texts[:1] or [""], **options})  # options checked before the first call
    results: list[SearchResponse] = []
    for chunk in chunks(texts, chunk_size):
        body = _model(BatchSearchRequest, {"queries": chunk, **options})
        data = yield Call("POST", _index(index, "search", "batch"), body, timeout=timeout)
        results += [SearchResponse.model_validate(r) for r in data["results"]]
    return dict(zip([str(i) for i in ids], results, strict=True)) if keyed else results


def _documents(documents: Iterable[Any]) -> list[dict[str, Any]]:
    out = []
    for doc in documents:
        if isinstance(doc, BaseModel):
            doc = doc.model_dump(by_alias=True)
        elif not isinstance(doc, Mapping) and hasattr(doc, "doc_id"):  # the library's Document
            doc = {"_id": doc.doc_id, "title": doc.title, "text": doc.text, "metadata": getattr(doc, "metadata", {}) or {}}
        out.append(dict(doc))
    return out


def upsert(index: str, documents: Iterable[Any], wait: bool, timeout: float | None) -> Op[WriteResponse | JobInfo]:
    body = _model(UpsertRequest, {"documents": _documents(documents), "wait": wait})
    data = yield Call("PUT", _index(index, "documents"), body, ok=(200, 202), timeout=timeout)
    return JobInfo.model_validate(data) if "state" in data else WriteResponse.model_validate(data)


def delete(index: str, ids: Iterable[str], timeout: float | None) -> Op[WriteResponse]:
    body = _model(DeleteDocumentsRequest, {"ids": list(ids)})
    return WriteResponse.model_validate((yield Call("DELETE", _index(index, "documents"), body, timeout=timeout)))


@dataclass
class BulkResult:
    """What a bulk helper wrote: one server answer per chunk, and their totals."""

    responses: list[WriteResponse] = field(default_factory=list)

    @property
    def upserted(self) -> int:
        return sum(r.upserted for r in self.responses)

    @property
    def deleted(self) -> int:
        return sum(r.deleted for r in self.responses)

    @property
    def missing(self) -> list[str]:
        return [m for r in self.responses for m in r.missing]

    @property
    def seq(self) -> int | None:
        return self.responses[-1].seq if self.responses else None

    @property
    def documents(self) -> int | None:
        return self.responses[-1].documents if self.responses else None


def bulk_upsert(index: str, documents: Iterable[Any], chunk_size: int, timeout: float | None) -> Op[BulkResult]:
    """Upserts in chunks of ``chunk_size`` (each one durable when its call returns; retried on 429/503), reading
    ``documents`` lazily: a generator of millions is fine. A chunk that fails raises, and the chunks before it stay
    written (upserts by id: sending them again is harmless)."""
    result = BulkResult()
    for chunk in chunks(documents, chunk_size):
        result.responses.append((yield from upsert(index, chunk, True, timeout)))  # type: ignore[arg-type]
    return result


def bulk_delete(index: str, ids: Iterable[str], chunk_size: int, timeout: float | None) -> Op[BulkResult]:
    result = BulkResult()
    for chunk in chunks(ids, chunk_size):
        result.responses.append((yield from delete(index, chunk, timeout)))
    return result


def list_indexes() -> Op[list[IndexInfo]]:
    return IndexList.model_validate((yield Call("GET", "/v1/indexes"))).indexes


def get_index(name: str) -> Op[IndexInfo]:
    return IndexInfo.model_validate((yield Call("GET", _index(name))))


def create_index(name: str, options: Mapping[str, Any], timeout: float | None) -> Op[IndexInfo | JobInfo]:
    body = _model(CreateIndexRequest, {"name": name, **options})
    data = yield Call("POST", "/v1/indexes", body, ok=(201, 202), timeout=timeout)
    return JobInfo.model_validate(data) if "state" in data else IndexInfo.model_validate(data)


def delete_index(name: str) -> Op[None]:
    yield Call("DELETE", _index(name), ok=(204,))


def reload_index(name: str, timeout: float | None) -> Op[IndexInfo]:
    return IndexInfo.model_validate((yield Call("POST", _index(name, "reload"), timeout=timeout)))


def snapshot(name: str, timeout: float | None) -> Op[SnapshotInfo]:
    return SnapshotInfo.model_validate((yield Call("POST", _index(name, "snapshot"), ok=(201,), timeout=timeout)))


def list_jobs() -> Op[list[JobInfo]]:
    return JobList.model_validate((yield Call("GET", "/v1/jobs"))).jobs


def get_job(job_id: str) -> Op[JobInfo]:
    return JobInfo.model_validate((yield Call("GET", "/v1/jobs/" + quote(job_id, safe=""))))


def wait_for_job(job_id: str, timeout: float, poll: float) -> Op[JobInfo]:
    """Polls until the job has succeeded or failed (its ``state`` says which); RequestTimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        job = yield from get_job(job_id)
        if job.state in ("succeeded", "failed"):
            return job
        if time.monotonic() >= deadline:
            raise RequestTimeoutError(0, f"job {job_id} still {job.state} ({job.stage}) after {timeout} s")
        yield Sleep(poll)


def queries(index: str) -> Op[QueryList]:
    return QueryList.model_validate((yield Call("GET", _index(index, "queries"))))


def qrels(index: str, query_id: str | None) -> Op[dict[str, dict[str, int]]]:
    params = {"query_id": query_id} if query_id is not None else None
    return QrelsResponse.model_validate((yield Call("GET", _index(index, "qrels"), params=params))).judgments


def leaderboard() -> Op[Leaderboard]:
    return Leaderboard.model_validate((yield Call("GET", "/v1/leaderboard")))


def compare_methods(dataset: str, a: str, b: str, metric: str | None) -> Op[MethodComparison]:
    params = {"dataset": dataset, "a": a, "b": b, **({"metric": metric} if metric else {})}
    return MethodComparison.model_validate((yield Call("GET", "/v1/leaderboard/compare", params=params)))


def as_run(results: Mapping[str, SearchResponse]) -> dict[str, dict[str, float]]:
    """``batch_search``'s ``{qid: result}`` as a TREC-style run, ``{qid: {doc id: score}}`` (what pytrec_eval and
    BEIR's evaluator take)."""
    return {qid: {hit.id: hit.score for hit in result.hits} for qid, result in results.items()}
