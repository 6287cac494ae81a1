"""The repository: the only code that reads or writes the job store.

Every state change is a guarded UPDATE naming the states it may come from (see
`imgq.domain.status.ALLOWED_FROM`); a change from any other state is refused loudly, and a
worker whose claim token no longer matches can change nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Row

from imgq.domain.models import Claim, Item, Job
from imgq.domain.status import FINISHED, Status, allowed_from
from imgq.errors import InvalidTransition, NotFound
from imgq.store.db import WRITE
from imgq.store.tables import items, jobs

_ITEM_FIELDS = [f.name for f in fields(Item)]
_JOB_FIELDS = [f.name for f in fields(Job) if f.name != "items"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Beat:
    """The answer to a heartbeat: is the claim still ours, and was cancel asked?"""

    owned: bool
    cancel_requested: bool


class Repository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            yield conn

    # -- jobs ---------------------------------------------------------------------------
    def create_job(self, job: Job) -> None:
        with self._write() as conn:
            conn.execute(insert(jobs).values(**{f: getattr(job, f) for f in _JOB_FIELDS}))
            conn.execute(
                insert(items),
                [{f: _db_value(getattr(i, f)) for f in _ITEM_FIELDS} for i in job.items],
            )

    def get_job(self, job_id: str) -> Job:
        found = self.get_jobs([job_id])
        if not found:
            raise NotFound(f"job {job_id} not found")
        return found[0]

    def get_jobs(self, job_ids: Sequence[str]) -> list[Job]:
        """Jobs in the order asked; unknown ids are left out."""
        with self.engine.connect() as conn:
            found = self._load_jobs(conn, jobs.c.id.in_(list(job_ids)))
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
            found = self._load_jobs(conn, jobs.c.id.in_(ids))
        found.sort(key=lambda j: (j.created_at, j.id), reverse=True)
        return found, total

    def _load_jobs(self, conn: Connection, where: Any) -> list[Job]:
        job_rows = conn.execute(select(jobs).where(where)).all()
        if not job_rows:
            return []
        by_id = {r.id: _job(r) for r in job_rows}
        item_rows = conn.execute(
            select(items).where(items.c.job_id.in_(list(by_id))).order_by(items.c.idx)
        ).all()
        for row in item_rows:
            by_id[row.job_id].items.append(_item(row))
        return list(by_id.values())

    def get_item(self, item_id: str) -> Item:
        with self.engine.connect() as conn:
            row = conn.execute(select(items).where(items.c.id == item_id)).first()
        if row is None:
            raise NotFound(f"item {item_id} not found")
        return _item(row)

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
            keys = self._blob_keys(conn, [job_id])
            conn.execute(delete(items).where(items.c.job_id == job_id))
            if not conn.execute(delete(jobs).where(jobs.c.id == job_id)).rowcount:
                raise NotFound(f"job {job_id} not found")
        return keys

    def _blob_keys(self, conn: Connection, job_ids: list[str]) -> list[str]:
        rows = conn.execute(
            select(items.c.input_key, items.c.result_key).where(items.c.job_id.in_(job_ids))
        ).all()
        return [k for row in rows for k in row if k]

    # -- the worker's side ----------------------------------------------------------------
    def claim(self, item_id: str, lease_seconds: float) -> Claim | None:
        """Take a queued item that is due. None when someone else has it or it is not due."""
        now = utcnow()
        token = str(uuid.uuid4())
        with self._write() as conn:
            claimed = conn.execute(
                update(items)
                .where(
                    items.c.id == item_id,
                    items.c.status.in_(_values(allowed_from(Status.running))),
                    or_(items.c.not_before.is_(None), items.c.not_before <= now),
                )
                .values(
                    status=Status.running.value, claim_token=token, attempts=items.c.attempts + 1,
                    lease_until=now + timedelta(seconds=lease_seconds),
                    started_at=func.coalesce(items.c.started_at, now), stage="starting",
                    not_before=None,
                )
            ).rowcount
            if not claimed:
                return None
            item = _item(conn.execute(select(items).where(items.c.id == item_id)).one())
            job = _job(conn.execute(select(jobs).where(jobs.c.id == item.job_id)).one())
        return Claim(item=item, job=job, token=token)

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
                update(items).where(*_owned(claim)).values(**values)
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
                .where(*_owned(claim, allowed_from(target)))
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

    # -- the sweeper's side ---------------------------------------------------------------
    def requeue_lost(self, max_attempts: int) -> tuple[list[str], list[str]]:
        """Items whose lease ran out: requeue them, or fail those out of attempts."""
        now = utcnow()
        lost = and_(items.c.status == Status.running.value, items.c.lease_until < now)
        with self._write() as conn:
            rows = conn.execute(select(items.c.id, items.c.attempts).where(lost)).all()
            retry = [r.id for r in rows if r.attempts < max_attempts]
            give_up = [r.id for r in rows if r.attempts >= max_attempts]
            if retry:
                conn.execute(
                    update(items).where(lost, items.c.id.in_(retry))
                    .values(status=Status.queued.value, claim_token=None, lease_until=None,
                            stage="requeued: its worker stopped responding", progress=0)
                )
            if give_up:
                conn.execute(
                    update(items).where(lost, items.c.id.in_(give_up))
                    .values(status=Status.failed.value, claim_token=None, lease_until=None,
                            finished_at=now, error_code="worker_lost", stage="failed",
                            error_message=f"its worker stopped responding {max_attempts} times; "
                            "the image may be too demanding for this server")
                )
        return retry, give_up

    def due_items(self, limit: int = 1000) -> list[tuple[str, str]]:
        """Queued items that are due now, oldest first, with their job's resource class."""
        now = utcnow()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(items.c.id, jobs.c.resource)
                .join(jobs, jobs.c.id == items.c.job_id)
                .where(items.c.status == Status.queued.value,
                       or_(items.c.not_before.is_(None), items.c.not_before <= now))
                .order_by(items.c.queued_at).limit(limit)
            ).all()
        return [(r.id, r.resource) for r in rows]

    def next_due_at(self) -> datetime | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.min(items.c.not_before)).where(items.c.status == Status.queued.value)
            ).scalar()

    def fail_stuck(self, older_than_seconds: float) -> list[str]:
        """Queued items that never ran for too long: fail them with a helpful message."""
        now = utcnow()
        stuck = and_(items.c.status == Status.queued.value,
                     items.c.queued_at < now - timedelta(seconds=older_than_seconds))
        with self._write() as conn:
            ids = list(conn.execute(select(items.c.id).where(stuck)).scalars())
            if ids:
                conn.execute(
                    update(items).where(stuck, items.c.id.in_(ids)).values(
                        status=Status.failed.value, finished_at=now, error_code="stuck",
                        stage="failed",
                        error_message=f"waited more than {older_than_seconds:.0f} s without a "
                        "worker taking it; check that workers are running for its queue",
                    )
                )
        return ids

    def expired_jobs(self, limit: int = 100) -> list[str]:
        """Jobs past their expiry whose items have all finished and whose files remain."""
        now = utcnow()
        unfinished = select(items.c.id).where(
            items.c.job_id == jobs.c.id, items.c.status.not_in(_values(FINISHED | {Status.expired}))
        ).exists()
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(jobs.c.id).where(jobs.c.expires_at <= now, jobs.c.data_removed.is_(False),
                                        ~unfinished).limit(limit)
            ).scalars())

    def blob_keys(self, job_id: str) -> list[str]:
        with self.engine.connect() as conn:
            return self._blob_keys(conn, [job_id])

    def mark_expired(self, job_id: str) -> None:
        """Keep a tombstone: the job and its items stay, marked expired, without files."""
        with self._write() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(data_removed=True))
            conn.execute(
                update(items)
                .where(items.c.job_id == job_id,
                       items.c.status.in_(_values(allowed_from(Status.expired))))
                .values(status=Status.expired.value, result_key=None, stage="expired")
            )

    def count_by_status(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(items.c.status, func.count()).group_by(items.c.status)).all()
        return {r[0]: r[1] for r in rows}

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))


def _owned(claim: Claim, sources: Iterable[Status] = (Status.running,)) -> list[Any]:
    return [items.c.id == claim.item.id, items.c.claim_token == claim.token,
            items.c.status.in_(_values(sources))]


def _values(statuses: Iterable[Status]) -> list[str]:
    return [s.value for s in statuses]


def _db_value(value: Any) -> Any:
    return value.value if isinstance(value, Status) else value


def _item(row: Row[Any]) -> Item:
    data = {f: getattr(row, f) for f in _ITEM_FIELDS}
    data["status"] = Status(data["status"])
    return Item(**data)


def _job(row: Row[Any]) -> Job:
    return Job(**{f: getattr(row, f) for f in _JOB_FIELDS})
