"""A memory budget shared by concurrent requests, and one computation per key at a time.

Previews are decoded in the API process. Most formats shrink while they load and cost a few
megabytes, but an interlaced PNG, a progressive JPEG, GIF, HEIF or AVIF is decoded whole
first: 24 of those at once would take gigabytes. Each render reserves its estimated bytes;
what does not fit waits its turn (429 with Retry-After when it waited too long), and
identical requests share one render instead of each making their own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

from imgq.errors import TooBusy

T = TypeVar("T")


class MemoryBudget:
    def __init__(self, capacity: int, wait: float, setting: str) -> None:
        self.capacity, self.wait, self.setting = capacity, wait, setting
        self.used = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def reserve(self, cost: int) -> AsyncIterator[None]:
        """Hold `cost` bytes (at most the whole budget) while the block runs."""
        cost = min(cost, self.capacity)
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.used + cost <= self.capacity), self.wait)
            except TimeoutError:
                raise TooBusy(f"the server is busy with other previews ({self.setting}); try "
                              "again shortly") from None
            self.used += cost
        try:
            yield
        finally:
            async with self._changed:
                self.used -= cost
                self._changed.notify_all()


class SingleFlight(Generic[T]):
    """Concurrent calls with the same key share one run. The run is a task of its own, so
    a client that goes away does not cancel it for the others."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Task[T]] = {}

    async def run(self, key: Hashable, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(make())
            self._running[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    def _finished(self, key: Hashable, task: asyncio.Task[T]) -> None:
        self._running.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved, even when every caller went away
