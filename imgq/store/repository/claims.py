"""The worker's side: claim an item, keep its lease, record how it ended."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, func, or_, select, update

from imgq.domain.models import Claim, Job
from imgq.domain.status import Status, allowed_from
from imgq.errors import InvalidTransition
from imgq.store.repository.base import (
    RepositoryBase,
    item_from_row,
    job_from_row,
    owned_by,
    utcnow,
    values_of,
)
from imgq.store.tables import items, jobs


@dataclass(frozen=True)
class Beat:
    """The answer to a heartbeat: is the claim still ours, and was cancel asked?"""

    owned: bool
    cancel_requested: bool


class ClaimStore(RepositoryBase):
    def claim(self, item_id: str, lease_seconds: float) -> Claim | None:
        """Take a queued item that is due. None when someone else has it or it is not due."""
        now = utcnow()
        token = str(uuid.uuid4())
        with self._write() as conn:
            claimed = conn.execute(
                update(items)
                .where(
                    items.c.id == item_id,
                    items.c.status.in_(values_of(allowed_from(Status.running))),
                    or_(items.c.not_before.is_(None), items.c.not_before <= now),
                )
                .values(
                    status=Status.running.value, claim_token=token, attempts=items.c.attempts + 1,
                    lease_until=now + timedelta(seconds=lease_seconds),
                    started_at=func.coalesce(items.c.started_at, now), stage="starting",
                    not_before=None,
                )
                .returning(*items.c)
            ).first()
            if claimed is None:
                return None
            item = item_from_row(claimed)
            job = self._job_for_claim(conn, item.job_id)
        return Claim(item=item, job=job, token=token)

    def _job_for_claim(self, conn: Connection, job_id: str) -> Job:
        # A job's pipeline never changes, and what may change (cancel) reaches a running item
        # through its heartbeats, so a worker can keep the rows of recent jobs.
        job = self._recent_jobs.get(job_id)
        if job is None:
            job = job_from_row(conn.execute(select(jobs).where(jobs.c.id == job_id)).one())
            if len(self._recent_jobs) >= 256:
                self._recent_jobs.pop(next(iter(self._recent_jobs)))
            self._recent_jobs[job_id] = job
        return job

    def heartbeat(
        self, claim: Claim, lease_seconds: float, progress: int | None = None,
        stage: str | None = None,
    ) -> Beat:
        values: dict[str, Any] = {"lease_until": utcnow() + timedelta(seconds=lease_seconds)}
        if progress is not None:
            values["progress"] = max(0, min(100, progress))
        if stage is not None:
            values["stage"] = stage[:200]
        with self._write() as conn:
            owned = conn.execute(
                update(items).where(*owned_by(claim)).values(**values)
            ).rowcount == 1
            cancel = conn.execute(
                select(jobs.c.cancel_requested).where(jobs.c.id == claim.job.id)
            ).scalar()
        return Beat(owned=owned, cancel_requested=bool(cancel))

    def finish_succeeded(
        self, claim: Claim, result_key: str, result_name: str, result_meta: dict[str, Any],
        processing_seconds: float,
    ) -> None:
        self._finish(claim, Status.succeeded, result_key=result_key, result_name=result_name,
                     result_meta=result_meta, processing_seconds=processing_seconds,
                     progress=100, stage="done")

    def finish_failed(
        self, claim: Claim, code: str, message: str, processing_seconds: float | None = None
    ) -> None:
        self._finish(claim, Status.failed, error_code=code, error_message=message[:2000],
                     processing_seconds=processing_seconds, stage="failed")

    def finish_cancelled(self, claim: Claim, processing_seconds: float | None = None) -> None:
        self._finish(claim, Status.cancelled, error_code="cancelled",
                     error_message="cancelled while running",
                     processing_seconds=processing_seconds, stage="cancelled")

    def retry_later(self, claim: Claim, delay_seconds: float, code: str, message: str) -> None:
        self._finish(
            claim, Status.queued, not_before=utcnow() + timedelta(seconds=delay_seconds),
            error_code=code, error_message=message[:2000], lease_until=None, claim_token=None,
            stage=f"retrying in {delay_seconds:.0f} s", progress=0, finished_at=None,
        )

    def _finish(self, claim: Claim, target: Status, **values: Any) -> None:
        values.setdefault("finished_at", utcnow())
        values.setdefault("lease_until", None)
        with self._write() as conn:
            done = conn.execute(
                update(items)
                .where(*owned_by(claim, allowed_from(target)))
                .values(status=target.value, **values)
            ).rowcount
            if not done:
                current = conn.execute(
                    select(items.c.status, items.c.claim_token).where(items.c.id == claim.item.id)
                ).first()
                raise InvalidTransition(
                    f"item {claim.item.id}: refused {target.value}; it is "
                    f"{current.status if current else 'gone'}"
                    f"{'' if current is None or current.claim_token == claim.token else ' and claimed by another worker'}"
                )
