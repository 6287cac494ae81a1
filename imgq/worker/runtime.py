"""What a process needs to do imgq's work, built once from the settings."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field

import pyvips

from imgq.ai.descriptors import SHIPPED
from imgq.blobs import BlobStore, open_blob_store
from imgq.config import Settings
from imgq.ops import build_registry
from imgq.ops.base import Registry
from imgq.ops.upscale import DEFAULT_MODEL, Upscale, shipped_choices
from imgq.store.db import make_engine, migrate
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

    @classmethod
    def from_settings(cls, settings: Settings, run_migrations: bool = False,
                      item_worker: bool = False) -> Runtime:
        """`item_worker`: for a process that runs items (no round trip to test a pooled
        database connection before each use; see `make_engine`)."""
        engine = make_engine(settings.database_url, pool_size=settings.db_pool_size,
                             max_overflow=settings.db_max_overflow, pre_ping=not item_worker)
        if run_migrations:
            migrate(engine)
        return cls(settings, Repository(engine), open_blob_store(settings.storage_url, settings),
                   build_registry(settings))

    def close(self) -> None:
        self.repo.engine.dispose()


def items_in_flight(settings: Settings, resource: str) -> int:
    """Items of a resource class one worker process runs at once: IMGQ_AI_ITEMS_IN_FLIGHT
    for AI (gpu) items (0: 4 on CUDA, 1 on the CPU), one for classic items."""
    if resource != "gpu":
        return 1
    from imgq.ops.ai_support import AIConfig

    return AIConfig.from_settings(settings).in_flight()


def tune_libvips(threads: int) -> None:
    """One worker process per core works best with few libvips threads each, and no
    operation cache: every item is a different image, and the cache would hold files open."""
    pyvips.concurrency_set(max(1, threads))
    pyvips.cache_set_max(0)


def lower_priority(nice: int) -> None:
    """Run this process (an item worker) `nice` steps below the API's CPU priority, so that
    the API's short requests are not queued behind image work on the same cores."""
    if nice > 0:
        with contextlib.suppress(OSError, AttributeError):  # no os.nice on Windows
            os.nice(nice)


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
