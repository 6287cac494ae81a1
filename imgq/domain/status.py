"""Item and job states and the transitions allowed between them."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum


class Status(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    expired = "expired"


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    partial = "partial"
    cancelled = "cancelled"
    expired = "expired"


TERMINAL = frozenset({Status.succeeded, Status.failed, Status.cancelled, Status.expired})
FINISHED = frozenset({Status.succeeded, Status.failed, Status.cancelled})

#: target state -> the states it may be reached from. Every update in the store names these.
ALLOWED_FROM: dict[Status, frozenset[Status]] = {
    Status.queued: frozenset({Status.running}),  # retry, or a lease that ran out
    Status.running: frozenset({Status.queued}),
    Status.succeeded: frozenset({Status.running}),
    Status.failed: frozenset({Status.queued, Status.running}),  # stuck or failed while running
    Status.cancelled: frozenset({Status.queued, Status.running}),
    Status.expired: FINISHED,
}


def allowed_from(target: Status) -> frozenset[Status]:
    return ALLOWED_FROM[target]


def can_transition(source: Status, target: Status) -> bool:
    return source in ALLOWED_FROM[target]


def derive_job_status(item_statuses: Iterable[Status]) -> JobStatus:
    """A job's state follows from its items' states."""
    statuses = list(item_statuses)
    present = set(statuses)
    if not present:
        return JobStatus.queued
    if present == {Status.expired}:
        return JobStatus.expired
    if present & {Status.queued, Status.running}:
        return JobStatus.running if present - {Status.queued} else JobStatus.queued
    if present == {Status.succeeded}:
        return JobStatus.succeeded
    if Status.succeeded in present:
        return JobStatus.partial
    if Status.failed in present:
        return JobStatus.failed
    if present <= {Status.cancelled, Status.expired}:
        return JobStatus.cancelled if Status.cancelled in present else JobStatus.expired
    return JobStatus.failed
