"""Micro-batching: concurrent single-query requests share one encoder call.

Encoders cost far less per query in a batch (one forward pass, one padded tensor) than one by one,
so under load the server gathers the single queries that arrive while a batch is running (and, while
one is, those within ``wait_ms`` of the first), groups those with identical options, and answers each
group with one ``Searcher.batch_search``. A query that arrives while no batch runs is dispatched at
once with whatever is already queued: one client at a time never waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass

from retrieval.search.pipeline import SearchResult


@dataclass
class _Pending:
    query: str
    key: Hashable
    future: asyncio.Future[SearchResult]


BatchFn = Callable[[list[str]], list[SearchResult]]


class MicroBatcher:
    def __init__(self, executor: Executor, wait_ms: float = 2.0, max_batch: int = 32, consumers: int = 2) -> None:
        self.executor = executor
        self.wait = wait_ms / 1000.0
        self.max_batch = max_batch
        self.consumers = consumers
        self._queue: asyncio.Queue[tuple[_Pending, BatchFn]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.batches = 0
        self.queries = 0
        self._inflight = 0

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._consume()) for _ in range(self.consumers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def submit(self, query: str, key: Hashable, run: BatchFn) -> SearchResult:
        """``run`` searches a list of queries with the options that ``key`` stands for."""
        assert self._queue is not None, "MicroBatcher.start() was not called"
        if self._inflight == 0 and self._queue.empty():
            # Nothing runs and nothing waits: go straight to a thread, skipping the queue's task hand-offs
            # (part of the per-request overhead a single client sees). Queries arriving meanwhile batch as before.
            self._inflight += 1
            self.batches += 1
            self.queries += 1
            try:
                return (await asyncio.get_running_loop().run_in_executor(self.executor, run, [query]))[0]
            finally:
                self._inflight -= 1
        future: asyncio.Future[SearchResult] = asyncio.get_running_loop().create_future()
        await self._queue.put((_Pending(query, key, future), run))
        return await future

    async def _gather(self) -> list[tuple[_Pending, BatchFn]]:
        assert self._queue is not None
        items = [await self._queue.get()]
        # Waiting for company only pays while another batch holds the cores; otherwise go now.
        deadline = asyncio.get_running_loop().time() + (self.wait if self._inflight else 0.0)
        while len(items) < self.max_batch:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                items.append(self._queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(self._queue.get(), remaining))
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
        return items

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._gather()
            groups: dict[Hashable, list[tuple[_Pending, BatchFn]]] = {}
            for item in items:
                groups.setdefault(item[0].key, []).append(item)
            for group in groups.values():
                pending = [p for p, _ in group if not p.future.done()]
                if not pending:
                    continue
                run = group[0][1]
                self.batches += 1
                self.queries += len(pending)
                self._inflight += 1
                try:
                    results = await loop.run_in_executor(self.executor, run, [p.query for p in pending])
                except Exception as exc:  # the same error answers every request of the group
                    for p in pending:
                        if not p.future.done():
                            p.future.set_exception(exc)
                    continue
                finally:
                    self._inflight -= 1
                for p, result in zip(pending, results):
                    if not p.future.done():
                        p.future.set_result(result)
