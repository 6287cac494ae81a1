"""The worker processes that run items, shared by the embedded dispatcher and the NATS worker.

Processes, not threads: image work must never block the server's event loop, and a worker
that crashes (a bad image can take down a native decoder) must not take the server with it.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from imgq.config import Settings
from imgq.logs import setup_logging
from imgq.worker.execute import Drained, drain
from imgq.worker.runtime import Runtime, tune_libvips

_runtime: Runtime | None = None  # this worker process's Runtime, made once by init_worker


def init_worker(settings: Settings, threads: int) -> None:
    global _runtime
    setup_logging(settings.log_level, settings.log_format)
    tune_libvips(threads)
    _runtime = Runtime.from_settings(settings)


def run_queue(resource: str) -> Drained:
    """Run the queue's due items in this worker process, in fair order (see `drain`)."""
    if _runtime is None:
        raise RuntimeError("worker process not initialised")
    return drain(_runtime, resource)


def new_pool(settings: Settings, processes: int) -> ProcessPoolExecutor:
    """`processes` spawned workers sharing the cores: libvips gets cores / processes threads."""
    threads = max(1, (multiprocessing.cpu_count() or 1) // processes)
    return ProcessPoolExecutor(max_workers=processes,
                               mp_context=multiprocessing.get_context("spawn"),
                               initializer=init_worker, initargs=(settings, threads))
