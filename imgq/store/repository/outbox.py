"""The webhook outbox: deliveries due, leased to one sender at a time."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Row

from imgq.domain.status import Status
from imgq.errors import InvalidTransition
from imgq.store.repository.base import RepositoryBase, utcnow, values_of
from imgq.store.tables import items, webhooks

WEBHOOK_PENDING, WEBHOOK_DELIVERED, WEBHOOK_FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True)
class Delivery:
    """A webhook in the outbox: where to send which job's result, and how it went."""

    id: str
    job_id: str
    url: str
    base_url: str
    status: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    delivered_at: datetime | None = None
    last_error: str | None = None


class WebhookOutbox(RepositoryBase):
    def claim_webhooks(self, lease_seconds: float, limit: int = 20) -> list[Delivery]:
        """Pending webhooks whose job has finished and that are due, each leased to the caller
        (a sender that dies leaves it due again when the lease runs out)."""
        now = utcnow()
        unfinished = select(items.c.id).where(
            items.c.job_id == webhooks.c.job_id,
            items.c.status.in_(values_of({Status.queued, Status.running}))).exists()
        claimed = []
        with self._write() as conn:
            rows = conn.execute(
                select(webhooks).where(webhooks.c.status == WEBHOOK_PENDING,
                                       webhooks.c.next_attempt_at <= now, ~unfinished)
                .order_by(webhooks.c.next_attempt_at).limit(limit)
            ).all()
            for row in rows:
                won = conn.execute(
                    update(webhooks).where(webhooks.c.id == row.id,
                                           webhooks.c.status == WEBHOOK_PENDING,
                                           webhooks.c.attempts == row.attempts)
                    .values(attempts=row.attempts + 1,
                            next_attempt_at=now + timedelta(seconds=lease_seconds))
                ).rowcount
                if won:
                    claimed.append(delivery_from_row(row, attempts=row.attempts + 1))
        return claimed

    def webhook_done(self, delivery: Delivery, error: str | None = None,
                     retry_at: datetime | None = None) -> None:
        """Record one attempt: delivered (no error), due again at retry_at, or given up."""
        values: dict[str, Any] = {"last_error": error and error[:2000]}
        if error is None:
            values.update(status=WEBHOOK_DELIVERED, delivered_at=utcnow())
        elif retry_at is None:
            values.update(status=WEBHOOK_FAILED)
        else:
            values.update(next_attempt_at=retry_at)
        with self._write() as conn:
            done = conn.execute(
                update(webhooks).where(webhooks.c.id == delivery.id,
                                       webhooks.c.status == WEBHOOK_PENDING,
                                       webhooks.c.attempts == delivery.attempts).values(**values)
            ).rowcount
        if not done:
            raise InvalidTransition(f"webhook {delivery.id}: attempt {delivery.attempts} was "
                                    "taken over by another sender or already recorded")


def delivery_from_row(row: Row[Any], **changes: Any) -> Delivery:
    return Delivery(**{**{f.name: getattr(row, f.name) for f in fields(Delivery)}, **changes})
