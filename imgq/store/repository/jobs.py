"""Jobs as clients see them: create, read, list, cancel, delete."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import delete, func, insert, select, update

from imgq.domain.models import Item, Job
from imgq.domain.status import Status
from imgq.errors import NotFound
from imgq.store.repository.base import (
    ITEM_FIELDS,
    JOB_FIELDS,
    RepositoryBase,
    db_value,
    item_from_row,
    utcnow,
)
from imgq.store.repository.outbox import WEBHOOK_PENDING
from imgq.store.tables import items, jobs, webhooks


class JobStore(RepositoryBase):
    def create_job(self, job: Job, callback_url: str | None = None, base_url: str = "") -> None:
        with self._write() as conn:
            conn.execute(insert(jobs).values(**{f: getattr(job, f) for f in JOB_FIELDS}))
            conn.execute(
                insert(items),
                [{f: db_value(getattr(i, f)) for f in ITEM_FIELDS} for i in job.items],
            )
            if callback_url:  # the outbox row commits with the job, or neither does
                conn.execute(insert(webhooks).values(
                    id=str(uuid.uuid4()), job_id=job.id, url=callback_url, base_url=base_url,
                    status=WEBHOOK_PENDING, attempts=0, next_attempt_at=job.created_at,
                    created_at=job.created_at))

    def get_job(self, job_id: str) -> Job:
        found = self.get_jobs([job_id])
        if not found:
            raise NotFound(f"job {job_id} not found")
        return found[0]

    def get_jobs(self, job_ids: Sequence[str]) -> list[Job]:
        """Jobs in the order asked; unknown ids are left out."""
        with self.engine.connect() as conn:
            found = self.load_jobs(conn, jobs.c.id.in_(list(job_ids)))
        by_id = {j.id: j for j in found}
        return [by_id[i] for i in job_ids if i in by_id]

    def list_jobs(self, limit: int, offset: int = 0) -> tuple[list[Job], int]:
        """A page of jobs, newest first, and the total count."""
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(jobs)).scalar_one()
            ids = conn.execute(
                select(jobs.c.id).order_by(jobs.c.created_at.desc(), jobs.c.id)
                .limit(limit).offset(offset)
            ).scalars().all()
            found = self.load_jobs(conn, jobs.c.id.in_(ids))
        found.sort(key=lambda j: (j.created_at, j.id), reverse=True)
        return found, total

    def get_item(self, item_id: str) -> Item:
        with self.engine.connect() as conn:
            row = conn.execute(select(items).where(items.c.id == item_id)).first()
        if row is None:
            raise NotFound(f"item {item_id} not found")
        return item_from_row(row)

    def cancel_job(self, job_id: str) -> Job:
        """Queued items never run; running ones stop at their next step; finished ones stay."""
        with self._write() as conn:
            found = conn.execute(
                update(jobs).where(jobs.c.id == job_id).values(cancel_requested=True)
            ).rowcount
            if not found:
                raise NotFound(f"job {job_id} not found")
            now = utcnow()
            conn.execute(
                update(items)
                .where(items.c.job_id == job_id, items.c.status == Status.queued.value)
                .values(status=Status.cancelled.value, finished_at=now, stage="cancelled",
                        error_code="cancelled", error_message="cancelled before it ran")
            )
        return self.get_job(job_id)

    def delete_job(self, job_id: str) -> list[str]:
        """Remove a job and its items; return the blob keys to delete."""
        with self._write() as conn:
            keys = self.keys_of_jobs(conn, [job_id])
            conn.execute(delete(items).where(items.c.job_id == job_id))
            if not conn.execute(delete(jobs).where(jobs.c.id == job_id)).rowcount:
                raise NotFound(f"job {job_id} not found")
        return keys

    def blob_keys(self, job_id: str) -> list[str]:
        with self.engine.connect() as conn:
            return self.keys_of_jobs(conn, [job_id])
