"""The embedded dispatcher: worker process pools (`imgq.dispatch.pool`) inside `imgq serve`.

Two lanes, the embedded twin of the fleet's cpu and gpu queues: items with an AI (gpu) step
run in their own processes (IMGQ_AI_WORKERS, each with cores ÷ that many model threads), classic
items in theirs (IMGQ_WORKERS), so a two-second resize never waits behind a ten-minute upscale
and model threads × processes never exceed the cores.
"""

from __future__ import annotations

import functools
import logging
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from imgq.config import Settings
from imgq.dispatch.base import Dispatcher
from imgq.dispatch.pool import measure_models, new_pool, run_item

log = logging.getLogger(__name__)



class Lane:
    """One pool of worker processes for one resource class, replaced when a process dies."""

    def __init__(self, resource: str, settings: Settings, workers: int) -> None:
        self.resource, self.settings, self.workers = resource, settings, workers
        self.pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        self.pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return new_pool(self.settings, self.workers, models=self.resource == "gpu")

    def replace(self, broken: ProcessPoolExecutor) -> ProcessPoolExecutor:
        """A new pool in place of `broken`, once: the other items of a broken pool find it
        already replaced."""
        if self.pool is None or self.pool is not broken:
            return self.pool or broken
        self.pool = self._new_pool()
        broken.shutdown(wait=False, cancel_futures=True)
        return self.pool


class EmbeddedDispatcher(Dispatcher):
    def __init__(self, settings: Settings, workers: int | None = None) -> None:
        self.settings = settings
        self.lanes = {"cpu": Lane("cpu", settings, workers or settings.worker_count),
                      "gpu": Lane("gpu", settings, settings.ai_workers)}
        self.workers = sum(lane.workers for lane in self.lanes.values())
        self._inflight: set[str] = set()
        self._lock = threading.RLock()
        self._timers: set[threading.Timer] = set()
        self._stopping = False

    def start(self) -> None:
        for lane in self.lanes.values():
            lane.start()
        ai = self.lanes["gpu"].pool
        if ai is not None and self.settings.ai_measure_on_start:
            # The AI lane's first task: items sent meanwhile get measured costs.
            ai.submit(measure_models).add_done_callback(_log_measured)

    def lane(self, resource: str) -> Lane:
        return self.lanes["gpu" if resource == "gpu" else "cpu"]

    def submit(self, item_ids: list[str], resource: str = "cpu", delay: float = 0.0) -> None:
        if delay > 0:
            timer = threading.Timer(delay, self._fire, args=(item_ids, resource, timer_ref := []))
            timer_ref.append(timer)
            timer.daemon = True
            with self._lock:
                self._timers.add(timer)
            timer.start()
            return
        with self._lock:
            lane = self.lane(resource)
            if lane.pool is None or self._stopping:
                return
            pool = lane.pool
            for item_id in item_ids:
                if item_id in self._inflight:
                    continue
                self._inflight.add(item_id)
                try:
                    future = pool.submit(run_item, item_id)
                except (BrokenProcessPool, RuntimeError):
                    self._inflight.discard(item_id)
                    pool = self._replace(lane, pool)
                    continue
                future.add_done_callback(functools.partial(self._done, item_id, resource, pool))

    def _fire(self, item_ids: list[str], resource: str, timer_ref: list[threading.Timer]) -> None:
        with self._lock:
            self._timers.discard(timer_ref[0])
        self.submit(item_ids, resource)

    def _done(self, item_id: str, resource: str, pool: ProcessPoolExecutor,
              future: Future[tuple[str, float | None]]) -> None:
        with self._lock:
            self._inflight.discard(item_id)
        try:
            status, retry_in = future.result()
        except BrokenProcessPool:
            # A worker process died (killed, or a native crash). Its item keeps its lease
            # and the sweeper requeues it when the lease runs out.
            log.error("a worker process died while running item %s; restarting the pool",
                      item_id, extra={"item_id": item_id})
            with self._lock:
                self._replace(self.lane(resource), pool)
            return
        except Exception:
            log.exception("item %s: unexpected error in the worker", item_id,
                          extra={"item_id": item_id})
            return
        if status == "retry" and retry_in is not None:
            self.submit([item_id], resource, delay=retry_in)

    def _replace(self, lane: Lane, broken: ProcessPoolExecutor) -> ProcessPoolExecutor:
        if self._stopping:
            return broken
        return lane.replace(broken)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            for timer in self._timers:
                timer.cancel()
            pools = [lane.pool for lane in self.lanes.values()]
            for lane in self.lanes.values():
                lane.pool = None
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def describe(self) -> dict[str, object]:
        return {"kind": "embedded", "workers": self.workers, "inflight": len(self._inflight),
                "lanes": {name: lane.workers for name, lane in self.lanes.items()}}


def _log_measured(future: Future[list[str]]) -> None:
    try:
        measured = future.result()
    except BrokenProcessPool:
        return  # the lane's own items report the dead process
    except Exception:
        log.exception("measuring the model costs failed")
        return
    if measured:
        log.info("measured the model costs of this machine: %s", ", ".join(measured))
