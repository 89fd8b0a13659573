"""Admission control: a bounded number of searches run, a bounded number wait, the rest are answered at once.

Without a bound, a burst larger than the server can serve queues in the event loop and the thread pool, every
request's latency grows with the queue, and clients time out on answers the server still computes. So a request
takes a *slot* before it reaches the micro-batcher: ``max_concurrent`` run at once, up to ``max_queued`` wait for a
slot in arrival order, and one that finds the queue full is answered 429 with ``Retry-After`` (how long the queue
ahead of it takes to drain, at the recent service time) without touching the pipeline. A request that waits past
its own deadline (``timeout_ms``) leaves the queue with a 504. While the process drains (SIGTERM), every new
request is answered 503 with ``Retry-After``: another replica should take it.

Writes pass a gate of their own (the write pool's threads, ``max_queued_writes`` waiting): a write beyond it is
refused with 429 before anything is written, so a write is either acknowledged (durable) or refused, never dropped.
A write then also holds one of the searches' slots while it runs (it encodes on the same cores), taken ahead of the
searches waiting and never refused for their queue: the work running at once stays ``max_concurrent``, whatever
the mix. And a search that arrives while the queue is full is refused by the ASGI middleware before its body is
read (:meth:`Admission.full`), so shedding costs the server next to nothing.
"""

from __future__ import annotations

import asyncio
import math
import signal
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType

from service.errors import ApiError

_draining = False


def begin_drain() -> None:
    """From now on this process admits nothing new (SIGTERM): requests get 503 with Retry-After."""
    global _draining
    _draining = True


def draining() -> bool:
    return _draining


def watch_for_drain() -> None:
    """Put :func:`begin_drain` in front of the SIGTERM handler the server installed (uvicorn's: stop listening,
    finish what is in flight, shut the app down), so requests already on open connections are refused with 503
    from the first moment. Only the main thread may set handlers; elsewhere (an app in a test client) nothing."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        begin_drain()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:  # no handler of the server's: the default action
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)


class Admission:
    def __init__(self, max_concurrent: int, max_queued: int, what: str = "search") -> None:
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.what = what
        self.running = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._service_s = 0.05  # a moving average of the time a request holds its slot, for Retry-After
        self.rejected = 0
        self.admitted = 0

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def retry_after(self) -> int:
        """Seconds until the work ahead of a new request would be done: whole seconds, at least 1."""
        ahead = self.running + len(self._waiting)
        return max(1, math.ceil(ahead * self._service_s / self.max_concurrent))

    def _refuse(self, status: int, message: str) -> ApiError:
        self.rejected += 1
        return ApiError(status, message, headers={"Retry-After": str(self.retry_after())})

    def full(self) -> bool:
        """Whether a request arriving now would be refused (every slot taken, the queue full, or draining)."""
        return _draining or (self.running >= self.max_concurrent and len(self._waiting) >= self.max_queued)

    def refusal(self) -> ApiError:
        """The answer :meth:`slot` gives a request it cannot take now."""
        if _draining:
            return self._refuse(503, f"the server is shutting down and takes no new {self.what}; retry on another "
                                     "replica")
        return self._refuse(429, f"the server is at its limit ({self.max_concurrent} {self.what}es running, "
                                 f"{self.max_queued} waiting); retry after the Retry-After seconds")

    @asynccontextmanager
    async def slot(self, deadline: float | None = None, priority: bool = False) -> AsyncIterator[None]:
        """Hold one slot for the block; raises ApiError 429 (queue full), 503 (draining) or 504 (``deadline``, a
        ``time.perf_counter()`` instant, passed while queued). ``priority``: wait ahead of the queue, never refused
        for its length (a write, already admitted by its own gate)."""
        if _draining and not priority:
            raise self.refusal()
        if self.running < self.max_concurrent and not self._waiting:
            self.running += 1
        elif len(self._waiting) >= self.max_queued and not priority:
            raise self.refusal()
        else:
            await self._wait(deadline, priority)
        self.admitted += 1
        started = time.perf_counter()
        try:
            yield
        finally:
            self._service_s = 0.9 * self._service_s + 0.1 * (time.perf_counter() - started)
            self._release()

    async def _wait(self, deadline: float | None, priority: bool = False) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if priority:
            self._waiting.appendleft(future)
        else:
            self._waiting.append(future)
        timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.CancelledError:  # the client went away
            if future.done() and not future.cancelled():
                self._release()  # the slot was handed over just as it left: pass it on
            else:
                future.cancel()
                self._waiting.remove(future)
            raise
        except asyncio.TimeoutError:
            if future.done():
                return  # handed over just as the deadline passed: ours (the pipeline answers 504)
            future.cancel()
            self._waiting.remove(future)
            raise ApiError(504, "timeout_ms passed while the search waited for a slot on a busy server; retry with "
                                "a longer timeout_ms or later",
                           headers={"Retry-After": str(self.retry_after())}) from None

    def _release(self) -> None:
        """Hand the slot to the first request still waiting, else free it."""
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_result(None)  # the slot passes on: running stays the same
                return
        self.running -= 1
