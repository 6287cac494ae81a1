"""Jobs as clients see them: create, read, list, cancel, delete; each within a `Scope`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, select, update

from imgq.domain.access import Quotas, Scope
from imgq.domain.models import Item, Job
from imgq.domain.status import Status
from imgq.errors import NotFound
from imgq.store.repository.base import (
    ITEM_COLUMNS,
    ITEM_FIELDS,
    JOB_FIELDS,
    RepositoryBase,
    db_value,
    item_from_row,
    raw_items,
    utcnow,
    visible,
)
from imgq.store.repository.outbox import WEBHOOK_PENDING
from imgq.store.repository.usage import check_quotas, count_submission
from imgq.store.tables import items, jobs, webhooks

# A job's removal flag and one of its items (NULLs when it has none at that index).
ITEM_OF_JOB = (select(jobs.c.data_removed, *ITEM_COLUMNS)
               .select_from(jobs.outerjoin(items, and_(items.c.job_id == jobs.c.id,
                                                      items.c.idx == bindparam("index"))))
               .where(jobs.c.id == bindparam("job_id")))
ITEM_OF_OWNERS_JOB = ITEM_OF_JOB.where(jobs.c.owner == bindparam("owner"))
_item_of_job = raw_items(1)  # its columns as the driver gives them (base.ITEM_COLUMNS)

# The lowest fair key still queued in a queue: the head of its fair order.
QUEUE_HEAD = (select(func.min(items.c.fair_key))
              .select_from(items.join(jobs, jobs.c.id == items.c.job_id))
              .where(items.c.status == Status.queued.value,
                     jobs.c.resource == bindparam("resource")))

# The highest fair key of an owner's queued items in a queue: where its next items go after.
OWNER_LAST = (select(func.max(items.c.fair_key))
              .select_from(items.join(jobs, jobs.c.id == items.c.job_id))
              .where(items.c.status == Status.queued.value, items.c.owner == bindparam("owner"),
                     jobs.c.resource == bindparam("resource")))


class JobStore(RepositoryBase):
    def create_job(self, job: Job, callback_url: str | None = None, base_url: str = "",
                   quotas: Quotas | None = None) -> None:
        """Store the job; with quotas, only if it keeps its owner within them (else
        QuotaExceeded, and nothing is stored)."""
        with self._write() as conn:
            if quotas is not None:
                today = count_submission(conn, job)  # locks the owner's row (usage.py)
                check_quotas(conn, job, quotas, items_today=today - len(job.items))
            conn.execute(insert(jobs).values(**{f: getattr(job, f) for f in JOB_FIELDS}))
            first = self._fair_start(conn, job)
            conn.execute(
                insert(items),
                [{**{f: db_value(getattr(i, f)) for f in ITEM_FIELDS}, "fair_key": first + n,
                  "owner": job.owner}
                 for n, i in enumerate(job.items)],
            )
            if callback_url:  # the outbox row commits with the job, or neither does
                conn.execute(insert(webhooks).values(
                    id=str(uuid.uuid4()), job_id=job.id, url=callback_url, base_url=base_url,
                    status=WEBHOOK_PENDING, attempts=0, next_attempt_at=job.created_at,
                    created_at=job.created_at))

    def _fair_start(self, conn: Connection, job: Job) -> int:
        """Where the job's items go in their queue's fair order: at the queue's head (the
        lowest key still queued), or after the owner's own queued items if those reach
        further. So an owner with one item waits for a few items, not for another's batch,
        and an owner's later jobs queue behind its earlier ones. A job without an owner is
        its own."""
        head = conn.execute(QUEUE_HEAD, {"resource": job.resource}).scalar()
        start = int(head or 0)
        if job.owner is not None:
            last = conn.execute(OWNER_LAST, {"resource": job.resource, "owner": job.owner}
                                ).scalar()
            if last is not None:
                start = max(start, int(last) + 1)
        return start

    def get_job(self, job_id: str, *, scope: Scope) -> Job:
        found = self.get_jobs([job_id], scope=scope)
        if not found:
            raise NotFound(f"job {job_id} not found")
        return found[0]

    def get_job_versioned(self, job_id: str, *, scope: Scope) -> tuple[Job, int]:
        """The job and its version (grows with every change to it or its items), one query."""
        with self.engine.connect().execution_options(**self.one_read) as conn:
            found = self.read_by_ids(conn, [job_id], scope)
        if not found:
            raise NotFound(f"job {job_id} not found")
        return found[0]

    def get_jobs_versioned(self, job_ids: Sequence[str], *,
                           scope: Scope) -> list[tuple[Job, int]]:
        """Jobs with their versions in the order asked; unknown ids, and other owners' jobs,
        are left out."""
        with self.engine.connect().execution_options(**self.one_read) as conn:
            found = self.read_by_ids(conn, list(job_ids), scope)
        by_id = {j.id: (j, v) for j, v in found}
        return [by_id[i] for i in job_ids if i in by_id]

    def get_jobs(self, job_ids: Sequence[str], *, scope: Scope) -> list[Job]:
        """Jobs in the order asked; unknown ids, and other owners' jobs, are left out."""
        return [job for job, _ in self.get_jobs_versioned(job_ids, scope=scope)]

    def list_jobs(self, limit: int, offset: int = 0, *, scope: Scope) -> tuple[list[Job], int]:
        """A page of the jobs the scope lists (its owner's; all for admins), newest first,
        and their total count."""
        mine = visible(scope, by_id=False)
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(jobs).where(*mine)).scalar_one()
            ids = conn.execute(
                select(jobs.c.id).where(*mine).order_by(jobs.c.created_at.desc(), jobs.c.id)
                .limit(limit).offset(offset)
            ).scalars().all()
            found = self.load_jobs(conn, jobs.c.id.in_(ids))
        found.sort(key=lambda j: (j.created_at, j.id), reverse=True)
        return found, total

    def get_job_item(self, job_id: str, index: int, *, scope: Scope) -> tuple[bool, Item | None]:
        """One item of a job by its index, as a download or a preview needs it, in one query
        that reads neither the job's other items nor its JSON columns: whether the job's
        files were removed, and the item (None when the job has no such item)."""
        params: dict[str, object] = {"job_id": job_id, "index": index}
        statement = ITEM_OF_JOB
        if not (scope.sees_all or scope.ids_open):  # as visible(scope): built once, at import
            if scope.owner is None:
                raise NotFound(f"job {job_id} not found")
            statement, params["owner"] = ITEM_OF_OWNERS_JOB, scope.owner
        with self.engine.connect().execution_options(**self.one_read) as conn:
            row = conn.execute(statement, params).first()
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return bool(row[0]), _item_of_job(row) if row[1] is not None else None

    def get_item(self, item_id: str) -> Item:
        """An item by its id, for imgq's own processes (clients name items by job and index)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(items).where(items.c.id == item_id)).first()
        if row is None:
            raise NotFound(f"item {item_id} not found")
        return item_from_row(row)

    def cancel_job(self, job_id: str, *, scope: Scope) -> Job:
        """Queued items never run; running ones stop at their next step; finished ones stay."""
        with self._write() as conn:
            found = conn.execute(
                update(jobs).where(jobs.c.id == job_id, *visible(scope))
                .values(cancel_requested=True)
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
        return self.get_job(job_id, scope=scope)

    def delete_job(self, job_id: str, *, scope: Scope) -> list[str]:
        """Remove a job and its items; return the blob keys to delete."""
        with self._write() as conn:
            if conn.execute(select(jobs.c.id).where(jobs.c.id == job_id, *visible(scope))
                            ).first() is None:
                raise NotFound(f"job {job_id} not found")
            keys = self.keys_of_jobs(conn, [job_id])
            conn.execute(delete(items).where(items.c.job_id == job_id))
            conn.execute(delete(jobs).where(jobs.c.id == job_id))
        return keys

    def blob_keys(self, job_id: str) -> list[str]:
        """For the sweeper: every file a job has."""
        with self.engine.connect() as conn:
            return self.keys_of_jobs(conn, [job_id])
