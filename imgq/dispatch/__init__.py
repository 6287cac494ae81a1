"""Dispatchers, chosen by IMGQ_BROKER_URL, and the fleet's sweeper.

Empty: the embedded pool inside `imgq serve`. redis:// or amqp://: Celery. nats://: NATS
JetStream. The broker libraries are imported only when their URL is used.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from imgq.config import Settings, SettingsError
from imgq.dispatch.base import Dispatcher

if TYPE_CHECKING:  # the worker package imports this one: import it lazily
    from imgq.worker.runtime import Runtime
    from imgq.worker.sweeper import SweepReport

log = logging.getLogger(__name__)

CELERY_SCHEMES = frozenset({"redis", "rediss", "amqp", "amqps", "pyamqp"})
NATS_SCHEMES = frozenset({"nats", "tls"})


def broker_kind(settings: Settings) -> str:
    """embedded, celery or nats; a URL of another kind is a settings error."""
    if not settings.broker_url:
        return "embedded"
    scheme = urlparse(settings.broker_url).scheme
    if scheme in CELERY_SCHEMES:
        return "celery"
    if scheme in NATS_SCHEMES:
        return "nats"
    raise SettingsError(f"IMGQ_BROKER_URL: unsupported scheme {scheme!r}; use redis://, "
                        "amqp:// (Celery) or nats:// (NATS JetStream), or leave it empty")


def make_dispatcher(settings: Settings, embedded_workers: bool = True) -> Dispatcher | None:
    """The dispatcher `imgq serve` publishes with. None: an API server without workers."""
    kind = broker_kind(settings)
    if kind == "celery":
        from imgq.dispatch.celery import CeleryDispatcher

        return CeleryDispatcher(settings)
    if kind == "nats":
        from imgq.dispatch.nats import NatsDispatcher

        return NatsDispatcher(settings)
    if not embedded_workers:
        return None
    from imgq.dispatch.embedded import EmbeddedDispatcher

    return EmbeddedDispatcher(settings)


def queue_for(settings: Settings, resource: str) -> str:
    return settings.gpu_queue if resource == "gpu" else settings.cpu_queue


def queue_names(settings: Settings, names: str | None) -> list[str]:
    """`--queues cpu,gpu`: the resource names stand for the configured queue names."""
    wanted = [n.strip() for n in (names or "cpu,gpu").split(",") if n.strip()]
    alias = {"cpu": settings.cpu_queue, "gpu": settings.gpu_queue}
    return list(dict.fromkeys(alias.get(n, n) for n in wanted))


class FleetSweeper:
    """The sweeper of a fleet; exactly one `imgq beat` runs it.

    Lost leases are requeued; queued items that have been due for `outbox_grace` seconds are
    published again, because their message may be lost (the API died between commit and
    publish, a broker restarted without persistence, a worker died holding it). An item is
    published again at most once per grace period: a duplicate is harmless, only wasted work.
    """

    def __init__(self, rt: Runtime, dispatcher: Dispatcher) -> None:
        self.rt = rt
        self.dispatcher = dispatcher
        self._published: dict[str, float] = {}

    def sweep_queue(self) -> SweepReport:
        from imgq.worker.sweeper import SweepReport, dispatch, requeue_lost

        report = SweepReport()
        requeue_lost(self.rt, report)
        now = time.monotonic()
        grace = self.rt.settings.outbox_grace
        self._published = {k: t for k, t in self._published.items() if now - t < grace}
        due = [(i, r) for i, r in self.rt.repo.due_items(due_for=grace)
               if i not in self._published]
        self._published.update((item_id, now) for item_id, _ in due)
        dispatch(self.dispatcher, due)
        if due:
            log.info("published %d queued items again (no worker took them in %.0f s)",
                     len(due), grace)
        report.dispatched = len(due)
        return report

    def sweep_expiry(self) -> SweepReport:
        from imgq.worker.sweeper import SweepReport, sweep_expiry
        from imgq.worker.webhooks import deliver_due_webhooks

        report = SweepReport()
        sweep_expiry(self.rt, report)
        deliver_due_webhooks(self.rt)  # webhooks are delivered by whoever sweeps
        return report


def run_worker(settings: Settings, queues: str | None, concurrency: int | None,
               pool: str | None) -> None:
    """`imgq worker`: consume the broker's queues until stopped."""
    kind = broker_kind(settings)
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


__all__ = ["Dispatcher", "FleetSweeper", "broker_kind", "make_dispatcher", "queue_for",
           "queue_names", "run_beat", "run_worker"]
