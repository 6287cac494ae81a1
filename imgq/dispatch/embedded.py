"""The embedded dispatcher: a pool of worker processes (`imgq.dispatch.pool`) inside `imgq serve`."""

from __future__ import annotations

import functools
import logging
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from imgq.config import Settings
from imgq.dispatch.base import Dispatcher
from imgq.dispatch.pool import new_pool, run_item

log = logging.getLogger(__name__)

class EmbeddedDispatcher(Dispatcher):
    def __init__(self, settings: Settings, workers: int | None = None) -> None:
        self.settings = settings
        self.workers = workers or settings.worker_count
        self._pool: ProcessPoolExecutor | None = None
        self._inflight: set[str] = set()
        self._lock = threading.RLock()
        self._timers: set[threading.Timer] = set()
        self._stopping = False

    def start(self) -> None:
        self._pool = new_pool(self.settings, self.workers)

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
            if self._pool is None or self._stopping:
                return
            pool = self._pool
            for item_id in item_ids:
                if item_id in self._inflight:
                    continue
                self._inflight.add(item_id)
                try:
                    future = pool.submit(run_item, item_id)
                except (BrokenProcessPool, RuntimeError):
                    self._inflight.discard(item_id)
                    pool = self._replace_pool(pool)
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
                self._replace_pool(pool)
            return
        except Exception:
            log.exception("item %s: unexpected error in the worker", item_id,
                          extra={"item_id": item_id})
            return
        if status == "retry" and retry_in is not None:
            self.submit([item_id], resource, delay=retry_in)

    def _replace_pool(self, broken: ProcessPoolExecutor) -> ProcessPoolExecutor:
        """A new pool in place of `broken`, once: the other items of a broken pool find it
        already replaced."""
        if self._stopping or self._pool is None or self._pool is not broken:
            return self._pool or broken
        self._pool = new_pool(self.settings, self.workers)
        broken.shutdown(wait=False, cancel_futures=True)
        return self._pool

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            for timer in self._timers:
                timer.cancel()
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def describe(self) -> dict[str, object]:
        return {"kind": "embedded", "workers": self.workers, "inflight": len(self._inflight)}
