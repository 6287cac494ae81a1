"""The repository: the only code that reads or writes the job store.

Every state change is a guarded UPDATE naming the states it may come from (see
`imgq.domain.status.ALLOWED_FROM`); a change from any other state is refused loudly, and a
worker whose claim token no longer matches can change nothing. One module per concern; the
`Repository` the rest of imgq uses is all of them.
"""

from __future__ import annotations

from imgq.store.repository.base import utcnow
from imgq.store.repository.claims import (
    Beat,
    ClaimStore,
    Finish,
    cancelled,
    failed,
    retry,
    succeeded,
)
from imgq.store.repository.compat_tasks import CompatTaskStore
from imgq.store.repository.events import EventStore
from imgq.store.repository.idempotency import IN_PROGRESS, Answer, IdempotencyStore
from imgq.store.repository.jobs import JobStore
from imgq.store.repository.keys import KeyStore
from imgq.store.repository.outbox import (
    WEBHOOK_DELIVERED,
    WEBHOOK_FAILED,
    WEBHOOK_PENDING,
    Delivery,
    WebhookOutbox,
)
from imgq.store.repository.sweeps import SweepStore
from imgq.store.repository.usage import UsageStore


class Repository(JobStore, ClaimStore, SweepStore, EventStore, WebhookOutbox, CompatTaskStore,
                 KeyStore, UsageStore, IdempotencyStore):
    """Jobs, claims, sweeps, events, the webhook outbox, the older APIs' task ids, API keys,
    quotas and Idempotency-Key answers."""


__all__ = ["IN_PROGRESS", "WEBHOOK_DELIVERED", "Answer", "WEBHOOK_FAILED", "WEBHOOK_PENDING", "Beat", "Delivery",
           "Finish", "Repository", "cancelled", "failed", "retry", "succeeded", "utcnow"]
