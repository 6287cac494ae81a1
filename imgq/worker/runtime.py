"""What a process needs to do imgq's work, built once from the settings."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyvips

from imgq.ai.descriptors import SHIPPED
from imgq.blobs import BlobStore, open_blob_store
from imgq.config import Settings
from imgq.ops import build_registry
from imgq.domain.models import Job
from imgq.ops.base import BoundStep, Registry
from imgq.ops.image import quiet_libvips
from imgq.ops.upscale import DEFAULT_MODEL, Upscale, shipped_choices
from imgq.store.db import make_engine, migrate, status_engine
from imgq.store.repository import Repository
from imgq.worker.hooks import ItemHooks, default_hooks

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    repo: Repository
    blobs: BlobStore
    registry: Registry
    hooks: ItemHooks = field(default_factory=default_hooks)  # around each item's life
    #: job id -> (the registry, the job's steps): restored once for all the job's items
    _steps: dict[str, tuple[Registry, list[BoundStep]]] = field(default_factory=dict,
                                                                 repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, run_migrations: bool = False,
                      item_worker: bool = False) -> Runtime:
        """`item_worker`: for a process that runs items (no round trip to test a pooled
        database connection before each use; see `make_engine`)."""
        engine = make_engine(settings.database_url, pool_size=settings.db_pool_size,
                             max_overflow=settings.db_max_overflow, pre_ping=not item_worker)
        if run_migrations:
            migrate(engine)
        reads = None if item_worker else status_engine(settings.database_url)
        return cls(settings, Repository(engine, reads),
                   open_blob_store(settings.storage_url, settings), build_registry(settings))

    def steps_of(self, job: Job) -> list[BoundStep]:
        """The job's pipeline as steps to run, restored once for the job's items (a job's
        pipeline never changes; the steps' parameters are frozen)."""
        kept = self._steps.get(job.id)
        if kept is not None and kept[0] is self.registry:
            return kept[1]
        steps = self.registry.restore(job.pipeline)
        if len(self._steps) >= 256:
            self._steps.pop(next(iter(self._steps)))
        self._steps[job.id] = (self.registry, steps)
        return steps

    def close(self) -> None:
        self.repo.close_polls()
        self.repo.engine.dispose()
        self.repo.status_engine.dispose()


def items_in_flight(settings: Settings, resource: str) -> int:
    """Items of a resource class one worker process runs at once: IMGQ_AI_ITEMS_IN_FLIGHT
    for AI (gpu) items (0: 4 on CUDA, 1 on the CPU), one for classic items."""
    if resource != "gpu":
        return 1
    from imgq.ops.ai_support import AIConfig

    return AIConfig.from_settings(settings).in_flight()


def tune_libvips(threads: int) -> None:
    """One worker process per core works best with few libvips threads each, and no
    operation cache: every item is a different image, and the cache would hold files open.
    libvips' chatter below a warning stays out of Python (`quiet_libvips`)."""
    pyvips.concurrency_set(max(1, threads))
    pyvips.cache_set_max(0)
    quiet_libvips()


def lower_priority(nice: int) -> None:
    """Run this process (an item worker) `nice` steps below the API's CPU priority, so that
    the API's short requests are not queued behind image work on the same cores."""
    if nice > 0:
        with contextlib.suppress(OSError, AttributeError):  # no os.nice on Windows
            os.nice(nice)


#: Linux's CPU group of this process's session, when the kernel schedules by session
#: (autogroup): "/autogroup-N nice X"; writing a number sets the group's nice.
AUTOGROUP = Path("/proc/self/autogroup")


def lower_session_priority(nice: int) -> bool:
    """Where Linux schedules by session (autogroup, /proc/sys/kernel/sched_autogroup_enabled,
    on by default on desktops and many servers), the cores are shared between sessions
    first, and a process's nice only orders it among its own session's processes: an item
    worker started in a session of its own (`setsid`, a service manager, a terminal of its
    own) got as much of the cores as the API's whole session, whatever its nice (status reads
    on a fleet's API 300-600 ms late at p99 while a worker on the same cores was busy;
    bench/bench_status.py). So a worker that leads its own session lowers its session's
    group to `nice` too, and the session's processes (its item processes) with it. Never a
    session it does not lead: that one holds its parent (a shell, or the API of
    `imgq serve`), which it would slow down as well. Without autogroup, or where the
    process is in a CPU cgroup of its own (which then decides instead), nothing changes.
    Whether the group's nice was set."""
    if nice <= 0 or os.getsid(0) != os.getpid():
        return False
    try:
        now = int(AUTOGROUP.read_text().split()[-1])
    except (OSError, ValueError, IndexError):  # not Linux, or no autogroup in this kernel
        return False
    if now >= nice:
        return False
    for _ in range(5):  # the kernel takes one change every 0.1 s from unprivileged processes
        try:
            AUTOGROUP.write_text(str(nice))
            return True
        except BlockingIOError:
            time.sleep(0.11)
        except OSError:
            return False
    return False


def limit_model_threads(threads: int) -> None:
    """A process that runs models uses `threads` CPU threads for them (OpenVINO, ncnn, and
    torch when it is here)."""
    from imgq.ai.warmup import limit_cpu_threads

    limit_cpu_threads(threads)


def models_to_measure(settings: Settings) -> list[str]:
    """The installed upscaling models this machine has no CPU cost figure for, one per cost
    class (imgq.ai.costs.cost_class), the default model first: what the AI workers measure
    ahead of need. Models on the CPU only (a GPU's figures come from its first runs), and not
    those that run on torch here (DAT light): measuring one holds an AI worker for tens of
    seconds, so their first run measures them."""
    from imgq.ai.costs import cost_class
    from imgq.ai.cpu_nets import choose_runtime
    from imgq.ai.warmup import measured
    from imgq.ops.ai_support import AIConfig

    config = AIConfig.from_settings(settings)
    names = list(shipped_choices())
    if not names or config.runs_on_cuda():
        return []
    names.sort(key=lambda name: name != DEFAULT_MODEL)
    book, todo, classes = config.costs(), [], set()
    for name in names:
        descriptor = SHIPPED.get(name)
        if (cost_class(descriptor) in classes or choose_runtime(descriptor) == "torch"
                or measured(descriptor, book, config.threads)):
            continue
        classes.add(cost_class(descriptor))
        todo.append(name)
    return todo


def measure_model_costs(rt: Runtime, names: list[str] | None = None) -> list[str]:
    """Measure the named upscaling models (default: all installed) that have no cost figure
    on this machine yet. The names measured."""
    op = rt.registry.get("upscale") if "upscale" in rt.registry else None
    if not isinstance(op, Upscale) or op.unavailable_reason or op.config.runs_on_cuda():
        return []
    from imgq.ai.warmup import calibrate_missing

    config = op.config
    wanted = shipped_choices() if names is None else names
    descriptors = [SHIPPED.get(name) for name in wanted if name in shipped_choices()]
    return calibrate_missing(descriptors, config.costs(), config.models_dir, config.threads)
