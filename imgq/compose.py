"""The composition root: settings in, a running imgq out.

Everything a process of imgq is made of is chosen here and nowhere else: the database and the
repository, the blob store, the operations registry (inside `Runtime`), the dispatcher (the
embedded pool, Celery or NATS), and the web application around them. The `imgq` command calls
these; nothing below imports this module.
"""

from __future__ import annotations

import logging

import pyvips
from fastapi import FastAPI

from imgq.api.app import create_app
from imgq.config import Settings, SettingsError
from imgq.dispatch.base import Dispatcher, broker_kind, queue_names
from imgq.ops.image import quiet_libvips
from imgq.worker.runtime import Runtime, lower_session_priority

log = logging.getLogger(__name__)

def open_runtime(settings: Settings, run_migrations: bool = False) -> Runtime:
    """The database, blob store and operations one process works with."""
    return Runtime.from_settings(settings, run_migrations=run_migrations)


def build_app(settings: Settings, embedded_workers: bool = True) -> tuple[FastAPI, Dispatcher | None]:
    """`imgq serve`: the API with its dispatcher; the sweeper runs in it unless a fleet's
    `imgq beat` does that job."""
    # No libvips operation cache in the API process: it would keep decoded previews alive.
    pyvips.cache_set_max(0)
    quiet_libvips()
    dispatcher = make_dispatcher(settings, embedded_workers=embedded_workers)
    fleet = broker_kind(settings) != "embedded"
    runtime = open_runtime(settings, run_migrations=True)
    return create_app(runtime, dispatcher, sweeper=not fleet), dispatcher


def make_dispatcher(settings: Settings, embedded_workers: bool = True) -> Dispatcher | None:
    """The dispatcher `imgq serve` publishes with. None: an API server without workers."""
    kind = broker_kind(settings)
    if kind == "celery":
        from imgq.dispatch.celery_app import CeleryDispatcher

        return CeleryDispatcher(settings)
    if kind == "nats":
        from imgq.dispatch.nats import NatsDispatcher

        return NatsDispatcher(settings)
    if not embedded_workers:
        return None
    from imgq.dispatch.embedded import EmbeddedDispatcher

    return EmbeddedDispatcher(settings)


def run_worker(settings: Settings, queues: str | None, concurrency: int | None,
               pool: str | None) -> None:
    """`imgq worker`: consume the broker's queues until stopped."""
    kind = broker_kind(settings)
    if kind != "embedded" and lower_session_priority(settings.worker_nice):
        log.info("worker session's CPU group lowered to nice %d (Linux autogroup)",
                 settings.worker_nice)
    if kind == "celery":
        from imgq.dispatch.celery import run_worker as run_celery

        run_celery(settings, queue_names(settings, queues), concurrency, pool)
    elif kind == "nats":
        from imgq.dispatch.nats import run_worker as run_nats

        run_nats(settings, queue_names(settings, queues), concurrency)
    else:
        raise SettingsError("imgq worker needs IMGQ_BROKER_URL (redis://, amqp:// or nats://); "
                            "with no broker, `imgq serve` runs the workers itself")


def run_beat(settings: Settings) -> None:
    """`imgq beat`: the fleet's periodic sweeper (run exactly one)."""
    kind = broker_kind(settings)
    if kind == "celery":
        from imgq.dispatch.celery import run_beat as run_celery_beat

        run_celery_beat(settings)
    elif kind == "nats":
        from imgq.dispatch.nats import run_beat as run_nats_beat

        run_nats_beat(settings)
    else:
        raise SettingsError("imgq beat needs IMGQ_BROKER_URL; with no broker, `imgq serve` "
                            "sweeps by itself")
