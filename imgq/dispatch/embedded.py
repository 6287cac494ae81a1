"""The embedded dispatcher: pools of worker processes inside `imgq serve`, one per lane.

Processes, not threads: image work must never block the server's event loop, and a worker
that crashes (a bad image can take down a native decoder) must not take the server with it.

Lanes are the embedded twin of the fleet's cpu and gpu queues: items with an AI (gpu) step go
to their own processes (IMGQ_AI_WORKERS, each with cores ÷ that many model threads), classic
items to theirs (IMGQ_WORKERS), so a two-second resize never waits behind a ten-minute upscale,
and model threads × processes never exceed the cores.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from imgq.config import Settings
from imgq.dispatch.base import Dispatcher

log = logging.getLogger(__name__)

_runtime = None  # the worker process's Runtime, made once by _init_worker


def _init_worker(settings: Settings, threads: int, lane: str = "cpu") -> None:
    global _runtime
    from imgq.logs import setup_logging
    from imgq.worker.runtime import Runtime, limit_model_threads, tune_libvips

    setup_logging(settings.log_level)
    tune_libvips(threads)
    if lane == "gpu":
        limit_model_threads(threads)
    _runtime = Runtime.from_settings(settings)


def _run(item_id: str) -> tuple[str, float | None]:
    from imgq.worker.execute import execute

    assert _runtime is not None, "worker process not initialised"
    outcome = execute(_runtime, item_id)
    return outcome.status, outcome.retry_in


def _measure_models() -> list[str]:
    """The AI lane's first task: measure this machine's model costs where none are known."""
    from imgq.worker.runtime import measure_model_costs

    assert _runtime is not None, "worker process not initialised"
    return measure_model_costs(_runtime)


@dataclass(frozen=True)
class LaneSpec:
    name: str  # "cpu" or "gpu": the resource class it runs
    workers: int
    threads: int  # per process


def lane_specs(settings: Settings, workers: int | None = None) -> list[LaneSpec]:
    """The classic lane (IMGQ_WORKERS, libvips threads = cores ÷ workers) and the AI lane."""
    cores = multiprocessing.cpu_count() or 1
    classic = workers or settings.worker_count
    return [LaneSpec("cpu", classic, max(1, cores // classic)),
            LaneSpec("gpu", settings.ai_workers, settings.ai_threads)]


class Lane:
    """One pool of worker processes, replaced when a process dies."""

    def __init__(self, spec: LaneSpec, settings: Settings) -> None:
        self.spec, self.settings = spec, settings
        self.pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        self.pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.spec.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker, initargs=(self.settings, self.spec.threads, self.spec.name),
        )

    def replace_if_broken(self) -> None:
        old = self.pool
        if old is None or not getattr(old, "_broken", False):
            return
        self.pool = self._new_pool()
        old.shutdown(wait=False, cancel_futures=True)

    def stop(self) -> ProcessPoolExecutor | None:
        pool, self.pool = self.pool, None
        return pool


class EmbeddedDispatcher(Dispatcher):
    def __init__(self, settings: Settings, workers: int | None = None) -> None:
        self.settings = settings
        self.lanes = {spec.name: Lane(spec, settings) for spec in lane_specs(settings, workers)}
        self.workers = sum(lane.spec.workers for lane in self.lanes.values())
        self._inflight: set[str] = set()
        self._lock = threading.RLock()
        self._timers: set[threading.Timer] = set()
        self._stopping = False

    def start(self) -> None:
        for lane in self.lanes.values():
            lane.start()
        gpu = self.lanes["gpu"].pool
        if gpu is not None:  # queued first, so items sent meanwhile run with measured costs
            gpu.submit(_measure_models).add_done_callback(_log_measured)

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
            for item_id in item_ids:
                if item_id in self._inflight:
                    continue
                self._inflight.add(item_id)
                try:
                    future = lane.pool.submit(_run, item_id)
                except (BrokenProcessPool, RuntimeError):
                    self._inflight.discard(item_id)
                    self._replace(lane)
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
                self._replace(self.lane(resource))
            return
        except Exception:
            log.exception("item %s: unexpected error in the worker", item_id,
                          extra={"item_id": item_id})
            return
        if status == "retry" and retry_in is not None:
            self.submit([item_id], resource, delay=retry_in)

    def _replace(self, lane: Lane) -> None:
        if not self._stopping:
            lane.replace_if_broken()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            for timer in self._timers:
                timer.cancel()
            pools = [lane.stop() for lane in self.lanes.values()]
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def describe(self) -> dict[str, object]:
        return {"kind": "embedded", "workers": self.workers, "inflight": len(self._inflight),
                "lanes": {name: {"workers": lane.spec.workers, "threads": lane.spec.threads}
                          for name, lane in self.lanes.items()}}


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
