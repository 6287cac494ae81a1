"""The worker processes that run items, shared by the embedded dispatcher and the NATS worker.

Processes, not threads: image work must never block the server's event loop, and a worker
that crashes (a bad image can take down a native decoder) must not take the server with it.

The pool is pebble's `ProcessPool`: a process that dies (killed, crashed, or ended by its own
watchdog because a step ignored a cancel or the time limit, see `imgq.worker.context`) is
replaced alone, and the drains of the other processes go on. The item the dead process held
keeps its lease; the sweeper requeues it without spending an attempt. Processes also leave to
be replaced after IMGQ_WORKER_MAX_ITEMS items or above IMGQ_WORKER_MAX_MEMORY_MB, between two
items, so no item in hand is ever lost to a recycle.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from pebble import ProcessExpired, ProcessPool

from imgq.config import Settings
from imgq.logs import setup_logging
from imgq.worker.context import EXIT_STOPPED, allow_hard_stop
from imgq.worker.execute import DRAIN_SECONDS, Drained, drain_concurrently
from imgq.worker.runtime import (
    Runtime,
    items_in_flight,
    limit_model_threads,
    lower_priority,
    measure_model_costs,
    tune_libvips,
)

log = logging.getLogger(__name__)

#: Exit status of a worker process that left to be replaced (item count or memory ceiling).
EXIT_RECYCLE = 71
#: Seconds past the longest a drain may take after which the pool kills its process itself
#: (the process's own watchdog should have ended it long before).
HARD_MARGIN = 10.0

_runtime: Runtime | None = None  # this worker process's Runtime, made once by init_worker
_items_run = 0  # by this worker process


def init_worker(settings: Settings, threads: int, models: bool = False,
                environ: dict[str, str] | None = None) -> None:
    global _runtime
    if environ is not None:  # the environment of the process that made the pool, not the
        os.environ.clear()   # fork server's (started once, by the first pool)
        os.environ.update(environ)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    setup_logging(settings.log_level, settings.log_format)
    lower_priority(settings.worker_nice)
    tune_libvips(threads)
    if models:  # a process that runs AI steps: its model threads share the cores too
        limit_model_threads(threads)
    allow_hard_stop()
    _runtime = Runtime.from_settings(settings, item_worker=True)


def run_queue(resource: str) -> Drained:
    """Run the queue's due items in this worker process, in fair order (see `drain`)."""
    global _items_run
    if _runtime is None:
        raise RuntimeError("worker process not initialised")
    settings = _runtime.settings
    _leave_if_spent(settings)
    limit = settings.worker_max_items - _items_run if settings.worker_max_items else None
    # AI items: several at once sharing the loaded models (IMGQ_AI_ITEMS_IN_FLIGHT).
    drained = drain_concurrently(_runtime, resource, items_in_flight(settings, resource),
                                 limit=limit)
    _items_run += drained.items
    return drained


def measure_models(names: list[str] | None = None) -> list[str]:
    """Measure this machine's costs of the named models where none are known
    (imgq.ai.warmup); all installed ones without names."""
    if _runtime is None:
        raise RuntimeError("worker process not initialised")
    return measure_model_costs(_runtime, names)


def resident_mb() -> float:
    """This process's resident memory now, in MB (Linux; 0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _leave_if_spent(settings: Settings) -> None:
    """After its items, before claiming another: leave to be replaced by a fresh process
    (as Celery's worker_max_tasks_per_child and worker_max_memory_per_child)."""
    if not _items_run:
        return
    reason = ""
    if settings.worker_max_items and _items_run >= settings.worker_max_items:
        reason = f"it ran {_items_run} items (IMGQ_WORKER_MAX_ITEMS)"
    elif settings.worker_max_memory_mb and (rss := resident_mb()) > settings.worker_max_memory_mb:
        reason = f"it uses {rss:.0f} MB (IMGQ_WORKER_MAX_MEMORY_MB={settings.worker_max_memory_mb})"
    if reason:
        log.info("worker process %d is replaced: %s", os.getpid(), reason)
        logging.shutdown()
        os._exit(EXIT_RECYCLE)


def _worker_context() -> multiprocessing.context.BaseContext:
    """Worker processes are forked from a fork server that imported the worker's modules
    once (the server's main module included), not spawned: a spawned process imports them
    again, seconds of CPU each time a process starts or is replaced. The fork server is a
    fresh single-threaded process, so the children inherit no threads and no connections
    (each opens its own in init_worker), as a spawned process would; they get the sys.path
    and (init_worker) the environment of the process that made the pool, as a spawned one."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", __name__])
    return context


class WorkerPool:
    """`processes` worker processes sharing the cores: libvips, and the models when `models`
    (a pool that runs AI steps), get cores / processes threads each."""

    def __init__(self, settings: Settings, processes: int, models: bool = False) -> None:
        self.settings, self.models = settings, models
        self.threads = max(1, (multiprocessing.cpu_count() or 1) // processes)
        self._pool = ProcessPool(max_workers=processes, initializer=init_worker,
                                 initargs=(settings, self.threads, models, dict(os.environ)),
                                 context=_worker_context())

    def drain(self, resource: str) -> Future[Drained]:
        """Run a drain of the queue in a worker process; the future always gets a Drained
        (an empty one when the process died: the queue's items are looked at again)."""
        s = self.settings
        limit: float | None = (DRAIN_SECONDS + s.item_time_limit_seconds + s.kill_grace_seconds
                               + HARD_MARGIN)
        if self.models:
            # An AI item's own limit grows with its estimate (imgq.worker.execute.time_limit):
            # the process's watchdog enforces it, and a lost process loses its lease.
            limit = None
        done: Future[Drained] = Future()
        running = self._pool.schedule(run_queue, args=(resource,), timeout=limit)
        running.add_done_callback(lambda f: done.set_result(self._drained(f)))
        return done

    def _drained(self, running: Future[Drained]) -> Drained:
        try:
            return running.result()
        except ProcessExpired as exc:
            _log_exit(exc.exitcode)
        except FutureTimeout:
            log.error("a worker process ran past its time limit and was killed; its item is "
                      "requeued when its lease runs out")
        except Exception:
            log.exception("unexpected error in a worker process")
        return Drained(0, True)

    def measure_models(self, names: list[str] | None = None) -> Future[list[str]]:
        """Measure the named models (all without names) where this machine has no cost
        figure, in a worker process; the future has the names measured (none on failure)."""
        done: Future[list[str]] = Future()

        def finished(running: Future[list[str]]) -> None:
            done.set_result(_measured(running))

        self._pool.schedule(measure_models, args=(names,)).add_done_callback(finished)
        return done

    def stop(self, wait: float) -> None:
        """Let running items finish for up to `wait` seconds, then end what is left (its
        items keep their leases and are requeued without spending an attempt)."""
        self._pool.close()  # type: ignore[no-untyped-call]
        try:
            self._pool.join(timeout=wait)
        except TimeoutError:
            log.warning("stopping worker processes with items still running; they are "
                        "requeued when their leases run out")
            self._pool.stop()  # type: ignore[no-untyped-call]
            self._pool.join(timeout=10)


def _measured(future: Future[list[str]]) -> list[str]:
    try:
        measured = future.result()
    except Exception:  # a model that cannot run here fails its own items with the reason
        log.exception("measuring the model costs failed")
        return []
    if measured:
        log.info("measured the model costs of this machine: %s", ", ".join(measured))
    return measured


def _log_exit(exitcode: int | None) -> None:
    if exitcode == EXIT_RECYCLE:
        log.debug("a worker process left to be replaced")
    elif exitcode == EXIT_STOPPED:
        log.info("a worker process ended a step that would not stop; a new one replaces it")
    else:
        how = f"signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit {exitcode}"
        log.error("a worker process died (%s); a new one replaces it, and its item is "
                  "requeued when its lease runs out", how)
