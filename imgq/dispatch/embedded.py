"""The embedded dispatcher: a pool of worker processes (`imgq.dispatch.pool`) inside `imgq serve`.

A submit means "the queue has new work": it starts drains (each runs the queue's due items in
fair order until none is due) on free processes. One thread schedules drains, so the
bookkeeping needs no lock: submits, timers and finished drains send it events.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass

from imgq.config import Settings
from imgq.dispatch.base import Dispatcher
from imgq.dispatch.pool import WorkerPool
from imgq.worker.execute import Drained

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Wake:
    resource: str
    count: int


@dataclass(frozen=True)
class _Done:
    resource: str
    started: int  # the submit sequence number when the drain started
    future: Future[Drained]


class EmbeddedDispatcher(Dispatcher):
    def __init__(self, settings: Settings, workers: int | None = None) -> None:
        self.settings = settings
        self.workers = workers or settings.worker_count
        self._pool: WorkerPool | None = None
        self._events: queue.Queue[_Wake | _Done | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._timers: set[threading.Timer] = set()
        self._lock = threading.Lock()  # guards _timers only
        self._active = 0  # drains running (scheduler thread only)
        self._seq = 0  # submits seen (scheduler thread only)
        self._last_wake: dict[str, int] = {}

    def start(self) -> None:
        self._pool = WorkerPool(self.settings, self.workers)
        self._thread = threading.Thread(target=self._schedule, name="embedded-dispatch",
                                        daemon=True)
        self._thread.start()

    def submit(self, item_ids: list[str], resource: str = "cpu", delay: float = 0.0) -> None:
        if delay > 0:
            self._later(delay, _Wake(resource, len(item_ids)))
        else:
            self._events.put(_Wake(resource, len(item_ids)))

    def _later(self, delay: float, event: _Wake) -> None:
        def fire() -> None:
            with self._lock:
                self._timers.discard(timer)
            self._events.put(event)

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        with self._lock:
            self._timers.add(timer)
        timer.start()

    # -- the scheduler thread ----------------------------------------------------------------
    def _schedule(self) -> None:
        while (event := self._events.get()) is not None:
            if isinstance(event, _Wake):
                self._seq += 1
                self._last_wake[event.resource] = self._seq
                for _ in range(min(event.count, self.workers - self._active)):
                    self._start_drain(event.resource)
            else:
                self._active -= 1
                if self._finished(event):
                    self._start_drain(event.resource)

    def _finished(self, done: _Done) -> bool:
        """Handle a finished drain; True when another drain should follow it."""
        try:  # a process that died gives an empty drain (the pool replaced it alone)
            drained = done.future.result()
        except Exception:
            log.exception("unexpected error in a worker process")
            return False
        if drained.retry_in is not None:
            self._later(drained.retry_in, _Wake(done.resource, 1))
        # A submit after this drain started may have come after its last look at the queue.
        return drained.more or self._last_wake.get(done.resource, 0) > done.started

    def _start_drain(self, resource: str) -> None:
        if self._pool is None or self._active >= self.workers:
            return
        future = self._pool.drain(resource)
        self._active += 1
        future.add_done_callback(functools.partial(self._report, resource, self._seq))

    def _report(self, resource: str, started: int, future: Future[Drained]) -> None:
        self._events.put(_Done(resource, started, future))

    def stop(self) -> None:
        with self._lock:
            for timer in self._timers:
                timer.cancel()
        if self._thread is not None:
            self._events.put(None)
            self._thread.join(timeout=10)
            self._thread = None
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop(wait=self.settings.kill_grace_seconds + 2)

    def describe(self) -> dict[str, object]:
        return {"kind": "embedded", "workers": self.workers, "inflight": self._active}
