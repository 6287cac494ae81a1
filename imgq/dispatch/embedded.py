"""The embedded dispatcher: pools of worker processes (`imgq.dispatch.pool`) inside `imgq serve`.

A submit means "the queue has new work": it starts drains (each runs the queue's due items in
fair order until none is due) on free processes. One thread schedules drains, so the
bookkeeping needs no lock: submits, timers and finished drains send it events.

Two lanes, the embedded twin of the fleet's cpu and gpu queues: items with an AI (gpu) step
run in their own processes (IMGQ_AI_WORKERS, each with cores ÷ that many model threads), classic
items in theirs (IMGQ_WORKERS), so a two-second resize never waits behind a ten-minute upscale
and model threads × processes never exceed the cores. An AI process runs
IMGQ_AI_ITEMS_IN_FLIGHT items at once in threads (imgq.worker.execute.drain_concurrently).

Model costs (IMGQ_AI_MEASURE_ON_START): the AI lane measures the default model first, then the
other installed models one at a time, each only while the lane has nothing else to do, so the
first upscale after a start waits for at most one measurement, never for all of them.
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
from imgq.worker.runtime import models_to_measure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Wake:
    resource: str
    count: int


@dataclass(frozen=True)
class _MeasureNext:
    pass


@dataclass(frozen=True)
class _Measured:
    started: int  # the submit sequence number when the measurement started


@dataclass(frozen=True)
class _Done:
    resource: str
    started: int  # the submit sequence number when the drain started
    future: Future[Drained]


class EmbeddedDispatcher(Dispatcher):
    def __init__(self, settings: Settings, workers: int | None = None) -> None:
        self.settings = settings
        self.lanes = {"cpu": workers or settings.worker_count, "gpu": settings.ai_workers}
        self.workers = sum(self.lanes.values())
        self._pools: dict[str, WorkerPool] = {}
        self._events: queue.Queue[_Wake | _Done | _MeasureNext | _Measured | None] = \
            queue.Queue()
        self._thread: threading.Thread | None = None
        self._timers: set[threading.Timer] = set()
        self._lock = threading.Lock()  # guards _timers only
        self._active = {lane: 0 for lane in self.lanes}  # drains running (scheduler thread)
        self._seq = 0  # submits seen (scheduler thread only)
        self._last_wake: dict[str, int] = {}
        self._to_measure: list[str] = []  # models without a cost figure, the default first
        self._measuring = False

    def start(self) -> None:
        self._pools = {lane: WorkerPool(self.settings, n, models=lane == "gpu")
                       for lane, n in self.lanes.items()}
        if self.settings.ai_measure_on_start:
            try:
                self._to_measure = models_to_measure(self.settings)
            except Exception:  # estimates fall back to the reference figures
                log.exception("could not tell which models to measure")
            self._events.put(_MeasureNext())
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
                lane = _lane(event.resource)
                for _ in range(min(event.count, self.lanes[lane] - self._active[lane])):
                    self._start_drain(event.resource)
            elif isinstance(event, _Measured):
                self._active["gpu"] -= 1
                self._measuring = False
                if self._last_wake.get("gpu", 0) > event.started:  # items came meanwhile
                    self._start_drain("gpu")
            elif isinstance(event, _Done):
                self._active[_lane(event.resource)] -= 1
                if self._finished(event):
                    self._start_drain(event.resource)
            self._measure_next()

    def _measure_next(self) -> None:
        """Measure the next model without a cost figure while the AI lane is idle."""
        pool = self._pools.get("gpu")
        if not self._to_measure or self._measuring or self._active["gpu"] or pool is None:
            return
        name = self._to_measure.pop(0)
        self._measuring = True
        self._active["gpu"] += 1
        started = self._seq
        pool.measure_models([name]).add_done_callback(
            lambda _: self._events.put(_Measured(started)))

    def _finished(self, done: _Done) -> bool:
        """Handle a finished drain; True when another drain should follow it."""
        try:  # a process that died gives an empty drain (the pool replaced it alone)
            drained = done.future.result()
        except Exception:
            log.exception("unexpected error in a worker process")
            return False
        if drained.retry_in is not None:
            self._later(drained.retry_in, _Wake(done.resource, 1))
        for _, delay in drained.later:  # items that ran side by side and wait for a retry
            self._later(delay, _Wake(done.resource, 1))
        # A submit after this drain started may have come after its last look at the queue.
        return drained.more or self._last_wake.get(done.resource, 0) > done.started

    def _start_drain(self, resource: str) -> None:
        lane = _lane(resource)
        pool = self._pools.get(lane)
        if pool is None or self._active[lane] >= self.lanes[lane]:
            return
        future = pool.drain(resource)
        self._active[lane] += 1
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
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.stop(wait=self.settings.kill_grace_seconds + 2)

    def describe(self) -> dict[str, object]:
        return {"kind": "embedded", "workers": self.workers,
                "inflight": sum(self._active.values()), "lanes": dict(self.lanes)}


def _lane(resource: str) -> str:
    """The lane of a resource class: gpu items have their own processes, the rest share."""
    return "gpu" if resource == "gpu" else "cpu"
