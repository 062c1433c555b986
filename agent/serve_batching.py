"""Dynamic batching for the policy server: concurrent requests share one forward pass.

    batcher = Batcher(run_batch, max_batch=8, max_wait_s=0.005)
    task = asyncio.create_task(batcher.run())
    result = await batcher.submit(item)      # Batched(value, model_ms, queue_ms, batch_size)

`run_batch(items) -> results` (same length, same order) runs on one dedicated worker thread, so
the event loop keeps accepting connections and answering bad messages while the model computes,
and the model never runs twice at once. A batch closes when it holds `max_batch` items or
`max_wait_s` after its first item arrived, whichever is first; items that arrive while the model
is busy are waiting in the queue and go into the next batch without further delay. With
`senders() -> int`, the number of producers that can each have at most one item in flight (the
server's open connections), a batch also closes as soon as every sender is in it: a lone client
never waits `max_wait_s` for company that cannot come.

If `run_batch` raises on a batch of several items, each item is retried alone, so one item the
model chokes on gets the error and the others still get their answers. `delay_s` (a debug
setting) sleeps before every batch, standing in for a stalled or overloaded model.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from graft.envs.robot.protocol import percentiles

KEEP = 10_000  # timing samples kept for the stats (the most recent)


@dataclass
class Batched:
    value: Any
    model_ms: float  # the whole batch's forward pass
    queue_ms: float  # from submit to the start of the batch's forward pass
    batch_size: int


@dataclass
class _Item:
    value: Any
    future: asyncio.Future
    submitted: float
    alive: Callable[[], bool] | None = None

    def wanted(self) -> bool:
        return not self.future.done() and (self.alive is None or self.alive())


class Batcher:
    """Collect items from many coroutines into batches for `run_batch` (see the module docstring)."""

    def __init__(self, run_batch: Callable[[Sequence[Any]], Sequence[Any]], max_batch: int = 8,
                 max_wait_s: float = 0.005, delay_s: float = 0.0, senders: Callable[[], int] | None = None):
        if max_batch < 1 or max_wait_s < 0 or delay_s < 0:
            raise ValueError(f"need max_batch >= 1, max_wait_s >= 0, delay_s >= 0; got {max_batch}, "
                             f"{max_wait_s}, {delay_s}")
        self.run_batch, self.max_batch = run_batch, int(max_batch)
        self.max_wait_s, self.delay_s = max_wait_s, delay_s
        self.senders = senders
        self._items: deque[_Item] = deque()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.batch_sizes: Counter = Counter()
        self.model_ms: deque = deque(maxlen=KEEP)
        self.queue_ms: deque = deque(maxlen=KEEP)
        self.requests = self.failures = self.skipped = 0

    async def submit(self, value: Any, alive: Callable[[], bool] | None = None) -> Batched:
        """Queue one item and wait for its result (raises what `run_batch` raised for it).

        `alive() -> bool` is asked just before the item's batch runs: an item whose client has gone
        (its connection closed while it waited) is skipped instead of computed.
        """
        future = asyncio.get_running_loop().create_future()
        self._items.append(_Item(value, future, time.perf_counter(), alive))
        self.requests += 1
        self._arrived.set()
        return await future

    async def _gather(self) -> list[_Item]:
        while not self._items:
            self._arrived.clear()
            await self._arrived.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        batch: list[_Item] = []
        while True:
            while self._items and len(batch) < self.max_batch:
                batch.append(self._items.popleft())
            left = deadline - loop.time()
            full = min(self.max_batch, max(self.senders(), 1)) if self.senders is not None else self.max_batch
            if len(batch) >= full or left <= 0:
                return batch
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                pass

    def _call(self, values: list[Any]) -> list[Any]:
        if self.delay_s:
            time.sleep(self.delay_s)
        results = list(self.run_batch(values))
        if len(results) != len(values):
            raise RuntimeError(f"run_batch returned {len(results)} results for {len(values)} items")
        return results

    async def run(self) -> None:
        """The batching task: run it for as long as the server lives (cancel it to stop)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                batch = []
                for it in await self._gather():
                    if it.wanted():
                        batch.append(it)
                    elif not it.future.done():
                        self.skipped += 1
                        it.future.set_exception(ConnectionAbortedError("the client left before its turn"))
                if not batch:
                    continue
                start = time.perf_counter()
                try:
                    outcomes = [(True, r) for r in await loop.run_in_executor(
                        self._executor, self._call, [it.value for it in batch])]
                except Exception as exc:
                    outcomes = [(False, exc)] if len(batch) == 1 else await self._one_by_one(batch)
                model_ms = (time.perf_counter() - start) * 1000
                self.batch_sizes[len(batch)] += 1
                self.model_ms.append(model_ms)
                for it, (ok, value) in zip(batch, outcomes, strict=True):
                    queued = (start - it.submitted) * 1000
                    self.queue_ms.append(queued)
                    if it.future.done():
                        continue
                    if ok:
                        it.future.set_result(Batched(value, model_ms, queued, len(batch)))
                    else:
                        self.failures += 1
                        it.future.set_exception(value)
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _one_by_one(self, batch: list[_Item]) -> list[tuple[bool, Any]]:
        loop = asyncio.get_running_loop()
        outcomes = []
        for it in batch:
            try:
                results = await loop.run_in_executor(self._executor, self._call, [it.value])
                outcomes.append((True, results[0]))
            except Exception as exc:
                outcomes.append((False, exc))
        return outcomes

    def stats(self) -> dict:
        sizes = {int(k): int(v) for k, v in sorted(self.batch_sizes.items())}
        batches = sum(sizes.values())
        return {"requests": self.requests, "batches": batches, "failures": self.failures,
                "skipped": self.skipped,
                "batch_sizes": {str(k): v for k, v in sizes.items()},  # str keys: msgpack maps are str-keyed
                "max_batch_seen": max(sizes, default=0),
                "mean_batch": round(sum(k * v for k, v in sizes.items()) / batches, 3) if batches else 0.0,
                "model_ms": percentiles(self.model_ms), "queue_ms": percentiles(self.queue_ms)}
