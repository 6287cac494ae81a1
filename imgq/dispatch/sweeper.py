"""Sweeps that publish: queued items that no message carries are handed to a dispatcher."""

from __future__ import annotations

import logging
import time

from imgq.dispatch.base import Dispatcher
from imgq.worker.runtime import Runtime
from imgq.worker.sweeper import SweepReport, requeue_lost, sweep_expiry
from imgq.worker.webhooks import WebhookSender

log = logging.getLogger(__name__)


def dispatch_due(dispatcher: Dispatcher, due: list[tuple[str, str]]) -> None:
    """Submit (item id, resource class) pairs, one call per resource class."""
    by_resource: dict[str, list[str]] = {}
    for item_id, resource in due:
        by_resource.setdefault(resource, []).append(item_id)
    for resource, ids in by_resource.items():
        dispatcher.submit(ids, resource)


def sweep_queue(rt: Runtime, dispatcher: Dispatcher | None, report: SweepReport) -> None:
    """Requeue items whose worker stopped; dispatch queued items no message carries (outbox)."""
    requeue_lost(rt, report)
    if dispatcher is not None:
        due = rt.repo.due_items()
        dispatch_due(dispatcher, due)
        report.dispatched = len(due)


class FleetSweeper:
    """The sweeper of a fleet; exactly one `imgq beat` runs it.

    Lost leases are requeued; queued items that have been due for `outbox_grace_seconds` seconds are
    published again, because their message may be lost (the API died between commit and
    publish, a broker restarted without persistence, a worker died holding it). An item is
    published again at most once per grace period: a duplicate is harmless, only wasted work.
    """

    def __init__(self, rt: Runtime, dispatcher: Dispatcher) -> None:
        self.rt = rt
        self.dispatcher = dispatcher
        self.webhooks = WebhookSender(rt)
        self._published: dict[str, float] = {}

    def sweep_queue(self) -> SweepReport:
        report = SweepReport()
        requeue_lost(self.rt, report)
        now = time.monotonic()
        grace = self.rt.settings.outbox_grace_seconds
        self._published = {k: t for k, t in self._published.items() if now - t < grace}
        due = [(i, r) for i, r in self.rt.repo.due_items(due_for=grace)
               if i not in self._published]
        self._published.update((item_id, now) for item_id, _ in due)
        dispatch_due(self.dispatcher, due)
        if due:
            log.info("published %d queued items again (no worker took them in %.0f s)",
                     len(due), grace)
        report.dispatched = len(due)
        self.webhooks.send_due()  # webhooks are delivered by whoever sweeps, without waiting
        return report

    def sweep_expiry(self) -> SweepReport:
        report = SweepReport()
        sweep_expiry(self.rt, report)
        return report
