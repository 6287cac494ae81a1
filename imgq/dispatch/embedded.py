"""The embedded dispatcher: a pool of worker processes inside `imgq serve`.

Processes, not threads: image work must never block the server's event loop, and a worker
that crashes (a bad image can take down a native decoder) must not take the server with it.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from imgq.config import Settings
from imgq.dispatch.base import Dispatcher

log = logging.getLogger(__name__)

_runtime = None  # the worker process's Runtime, made once by _init_worker


def _init_worker(settings: Settings, threads: int) -> None:
    global _runtime
    from imgq.logs import setup_logging
    from imgq.worker.runtime import Runtime, tune_libvips

    setup_logging(settings.log_level)
    tune_libvips(threads)
    _runtime = Runtime.from_settings(settings)


def _run(item_id: str) -> tuple[str, float | None]:
    from imgq.worker.execute import execute

    assert _runtime is not None, "worker process not initialised"
    outcome = execute(_runtime, item_id)
    return outcome.status, outcome.retry_in


class EmbeddedDispatcher(Dispatcher):
    def __init__(self, settings: Settings, workers: int | None = None) -> None:
        self.settings = settings
        self.workers = workers or settings.worker_count
        self._pool: ProcessPoolExecutor | None = None
        self._inflight: set[str] = set()
        self._lock = threading.RLock()
        self._timers: set[threading.Timer] = set()
        self._stopping = False

    def _new_pool(self) -> ProcessPoolExecutor:
        threads = max(1, (multiprocessing.cpu_count() or 1) // self.workers)
        return ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker, initargs=(self.settings, threads),
        )

    def start(self) -> None:
        self._pool = self._new_pool()

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
            for item_id in item_ids:
                if item_id in self._inflight:
                    continue
                self._inflight.add(item_id)
                try:
                    future = self._pool.submit(_run, item_id)
                except (BrokenProcessPool, RuntimeError):
                    self._inflight.discard(item_id)
                    self._replace_pool()
                    continue
                future.add_done_callback(functools.partial(self._done, item_id, resource))

    def _fire(self, item_ids: list[str], resource: str, timer_ref: list[threading.Timer]) -> None:
        with self._lock:
            self._timers.discard(timer_ref[0])
        self.submit(item_ids, resource)

    def _done(self, item_id: str, resource: str, future: Future[tuple[str, float | None]]) -> None:
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
                self._replace_pool()
            return
        except Exception:
            log.exception("item %s: unexpected error in the worker", item_id,
                          extra={"item_id": item_id})
            return
        if status == "retry" and retry_in is not None:
            self.submit([item_id], resource, delay=retry_in)

    def _replace_pool(self) -> None:
        if self._stopping or self._pool is None:
            return
        old = self._pool
        if not getattr(old, "_broken", False):
            return
        self._pool = self._new_pool()
        old.shutdown(wait=False, cancel_futures=True)

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
