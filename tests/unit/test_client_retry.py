"""The client's retry policy and request checks, on httpx's MockTransport (a server that answers 429 and 503 on
demand; everything else is tested against the real server in tests/integration/test_client.py)."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import time
import warnings
from collections.abc import Callable, Iterator

import httpx
import pytest

from service.client import (
    AsyncHybridClient,
    ConnectionFailedError,
    HybridClient,
    InvalidRequestError,
    OverloadedError,
    Retry,
    VersionMismatchWarning,
)
from service.client._base import parse_retry_after
from service.version import VERSION

HIT = {"hits": [{"id": "d1", "score": 1.5, "rank": 1}], "took_ms": 1.0, "retrievers": ["bm25"]}
FAST = Retry(attempts=4, backoff=0.01, max_backoff=5)


def scripted(answers: list[httpx.Response | Exception], seen: list[httpx.Request]) -> Callable[[httpx.Request], httpx.Response]:
    """A server that gives ``answers`` in turn (an exception: the connection fails), recording each request."""
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer
    return handle


def busy(status: int, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(status, json={"error": {"code": status, "message": "busy"}}, headers=headers)


def client(answers: list[httpx.Response | Exception], seen: list[httpx.Request], retry: Retry = FAST) -> HybridClient:
    return HybridClient("http://test", transport=httpx.MockTransport(scripted(answers, seen)), retry=retry,
                        check_version=False, api_key="k")


def test_429_and_503_are_retried_and_retry_after_is_honoured() -> None:
    seen: list[httpx.Request] = []
    started = time.monotonic()
    with client([busy(429, "1"), busy(503), httpx.Response(200, json=HIT)], seen) as c:
        result = c.search("idx", "wing", k=1)
    assert result.hits[0].id == "d1" and len(seen) == 3
    assert time.monotonic() - started >= 1.0  # waited the second the server asked for
    assert all(r.headers["authorization"] == "Bearer k" and r.url.path == "/v1/indexes/idx/search" for r in seen)


def test_retries_run_out_and_long_retry_after_fails_at_once() -> None:
    seen: list[httpx.Request] = []
    with client([busy(503)] * 4, seen) as c, pytest.raises(OverloadedError) as raised:
        c.search("idx", "wing")
    assert len(seen) == 4 and raised.value.status == 503
    seen.clear()
    with client([busy(429, "120")], seen) as c, pytest.raises(OverloadedError) as raised:
        c.search("idx", "wing")
    assert len(seen) == 1 and raised.value.retry_after == 120.0  # longer than max_backoff: not waited out


def test_other_errors_are_not_retried_and_connections_are() -> None:
    seen: list[httpx.Request] = []
    with client([httpx.Response(422, json={"error": {"code": 422, "message": "bad filter"}})], seen) as c:
        with pytest.raises(InvalidRequestError, match="bad filter"):
            c.search("idx", "wing")
    assert len(seen) == 1
    seen.clear()
    refused = httpx.ConnectError("refused")
    with client([refused, refused, httpx.Response(200, json=HIT)], seen) as c:
        assert c.search("idx", "wing").hits
    assert len(seen) == 3
    seen.clear()
    with client([refused] * 2, seen, Retry(attempts=2, backoff=0.01)) as c, pytest.raises(ConnectionFailedError):
        c.search("idx", "wing")


def test_ready_takes_503_as_its_answer() -> None:
    seen: list[httpx.Request] = []
    with client([httpx.Response(503, json={"ready": False, "indexes": []})], seen) as c:
        assert c.ready().ready is False and len(seen) == 1


def test_bulk_upsert_chunks_retry_one_chunk_and_read_lazily() -> None:
    seen: list[httpx.Request] = []
    write = {"seq": 1, "upserted": 4, "documents": 4, "took_ms": 1.0}
    answers: list[httpx.Response | Exception] = [httpx.Response(200, json=write), busy(429, "0"),
                                                  httpx.Response(200, json=write), httpx.Response(200, json={**write, "upserted": 2})]
    pulled = []

    def documents():  # type: ignore[no-untyped-def]
        for i in range(10):
            pulled.append(i)
            yield {"_id": f"d{i}", "text": "x"}

    with client(answers, seen) as c:
        result = c.bulk_upsert("idx", documents(), chunk_size=4)
    assert result.upserted == 10 and len(result.responses) == 3 and len(seen) == 4
    sizes = [len(json.loads(r.content)["documents"]) for r in seen]
    assert sizes == [4, 4, 4, 2]  # the retried chunk is sent again whole
    assert json.loads(seen[0].content)["documents"][0] == {"_id": "d0", "text": "x"}


def test_requests_are_checked_before_sending() -> None:
    seen: list[httpx.Request] = []
    with client([], seen) as c:
        with pytest.raises(InvalidRequestError, match="k must be >= 1, got 0"):
            c.search("idx", "wing", k=0)
        with pytest.raises(InvalidRequestError, match="fusion.weights names 'dense', which this request does not search"):
            c.batch_search("idx", {"q1": "wing"}, retrievers=["bm25"], fusion={"method": "weighted", "weights": {"dense": 1}})
        with pytest.raises(InvalidRequestError, match="chunk_size must be >= 1"):
            c.bulk_delete("idx", ["a"], chunk_size=0)
    assert seen == []


def test_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (parse_retry_after(later) or 0) <= 31


def test_version_check_warns_on_another_minor_only() -> None:
    major, minor = (int(p) for p in VERSION.split(".")[:2])
    for server, warns in ((VERSION, False), (f"{major}.{minor}.99", False), (f"{major}.{minor + 1}.0", True)):
        transport = httpx.MockTransport(lambda r, v=server: httpx.Response(200, json={"status": "ok", "version": v}))
        with pytest.warns(VersionMismatchWarning) if warns else _no_warning():
            HybridClient("http://test", transport=transport).close()
    old = httpx.MockTransport(lambda r: httpx.Response(200, json={"status": "ok"}))
    with pytest.warns(VersionMismatchWarning, match="does not report its version"):
        HybridClient("http://test", transport=old).close()


@contextlib.contextmanager
def _no_warning() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_async_client_retries_and_checks_the_version_once() -> None:
    seen: list[httpx.Request] = []
    answers: list[httpx.Response | Exception] = [httpx.Response(200, json={"status": "ok", "version": VERSION}),
                                                 busy(503, "0"), httpx.Response(200, json={"results": [HIT, HIT], "took_ms": 2.0})]

    async def handle(request: httpx.Request) -> httpx.Response:
        return scripted(answers, seen)(request)

    async def main() -> dict:  # type: ignore[type-arg]
        async with AsyncHybridClient("http://test", transport=httpx.MockTransport(handle), retry=FAST) as c:
            return await c.batch_search("idx", {"a": "wing", "b": "flutter"})

    results = asyncio.run(main())
    assert list(results) == ["a", "b"] and [r.url.path for r in seen] == ["/v1/health", *["/v1/indexes/idx/search/batch"] * 2]
