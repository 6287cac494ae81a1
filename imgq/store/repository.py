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

from sqlalchemy import (
    Connection,
    Engine,
    Text,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Row

from imgq.domain.models import Claim, Item, Job
from imgq.domain.status import FINISHED, Status, allowed_from
from imgq.errors import InvalidTransition, NotFound
from imgq.store.db import WRITE
from imgq.store.tables import compat_tasks, items, jobs, webhooks

_ITEM_FIELDS = [f.name for f in fields(Item)]
_JOB_FIELDS = [f.name for f in fields(Job) if f.name != "items"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Beat:
    """The answer to a heartbeat: is the claim still ours, and was cancel asked?"""

    owned: bool
    cancel_requested: bool


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


class Repository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._recent_jobs: dict[str, Job] = {}

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            yield conn

    # -- jobs ---------------------------------------------------------------------------
    def create_job(self, job: Job, callback_url: str | None = None, base_url: str = "") -> None:
        with self._write() as conn:
            conn.execute(insert(jobs).values(**{f: getattr(job, f) for f in _JOB_FIELDS}))
            conn.execute(
                insert(items),
                [{f: _db_value(getattr(i, f)) for f in _ITEM_FIELDS} for i in job.items],
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
                .returning(*items.c)
            ).first()
            if claimed is None:
                return None
            item = _item(claimed)
            job = self._job_for_claim(conn, item.job_id)
        return Claim(item=item, job=job, token=token)

    def _job_for_claim(self, conn: Connection, job_id: str) -> Job:
        # A job's pipeline never changes, and what may change (cancel) reaches a running item
        # through its heartbeats, so a worker can keep the rows of recent jobs.
        job = self._recent_jobs.get(job_id)
        if job is None:
            job = _job(conn.execute(select(jobs).where(jobs.c.id == job_id)).one())
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
            # SKIP LOCKED: sweepers on several machines never fight over the same rows.
            rows = conn.execute(select(items.c.id, items.c.attempts).where(lost)
                                .with_for_update(skip_locked=True)).all()
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

    def due_items(self, limit: int = 1000, due_for: float = 0.0) -> list[tuple[str, str]]:
        """Queued items that are due now (and have been for `due_for` seconds), oldest first,
        with their job's resource class. Rows a worker is claiming right now are skipped."""
        now = utcnow()
        since = now - timedelta(seconds=due_for)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(items.c.id, jobs.c.resource)
                .join(jobs, jobs.c.id == items.c.job_id)
                .where(items.c.status == Status.queued.value,
                       or_(items.c.not_before.is_(None), items.c.not_before <= since),
                       items.c.queued_at <= since)
                .order_by(items.c.queued_at).limit(limit)
                .with_for_update(of=items, skip_locked=True)
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
            ids = list(conn.execute(select(items.c.id).where(stuck)
                                    .with_for_update(skip_locked=True)).scalars())
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

    def metrics_snapshot(self, buckets: Sequence[float]) -> dict[str, list[tuple[Any, ...]]]:
        """For /metrics: due queued items by resource, failed items by error code, and per
        pipeline (as JSON text) the count, sum and cumulative bucket counts of processing
        seconds. Read at scrape time, so every API server of a fleet reports the same."""
        due = or_(items.c.not_before.is_(None), items.c.not_before <= utcnow())
        joined = items.join(jobs, jobs.c.id == items.c.job_id)
        pipeline = cast(jobs.c.pipeline, Text)
        seconds = items.c.processing_seconds
        with self.engine.connect() as conn:
            depth = conn.execute(
                select(jobs.c.resource, func.count()).select_from(joined)
                .where(items.c.status == Status.queued.value, due).group_by(jobs.c.resource)
            ).all()
            failed = conn.execute(
                select(items.c.error_code, func.count())
                .where(items.c.status == Status.failed.value).group_by(items.c.error_code)
            ).all()
            histogram = conn.execute(
                select(pipeline, func.count(), func.sum(seconds),
                       *[func.sum(case((seconds <= b, 1), else_=0)) for b in buckets])
                .select_from(joined).where(seconds.is_not(None)).group_by(pipeline)
            ).all()
        return {"queue_depth": [tuple(r) for r in depth], "failed": [tuple(r) for r in failed],
                "processing": [tuple(r) for r in histogram]}

    # -- live events and the webhook outbox ------------------------------------------------
    def job_version(self, job_id: str) -> int | None:
        """A number that grows with every change to the job or its items; None: no such job."""
        with self.engine.connect() as conn:
            return self._job_version(conn, job_id)

    def job_snapshot(self, job_id: str) -> tuple[Job, int] | None:
        """The job with its version; the version is read first, so it is never newer."""
        with self.engine.connect() as conn:
            version = self._job_version(conn, job_id)
            found = self._load_jobs(conn, jobs.c.id == job_id)
        return (found[0], version) if found and version is not None else None

    def _job_version(self, conn: Connection, job_id: str) -> int | None:
        own = conn.execute(select(jobs.c.version).where(jobs.c.id == job_id)).scalar()
        if own is None:
            return None
        total = conn.execute(select(func.coalesce(func.sum(items.c.version), 0))
                             .where(items.c.job_id == job_id)).scalar_one()
        return int(own) + int(total)

    def claim_webhooks(self, lease_seconds: float, limit: int = 20) -> list[Delivery]:
        """Pending webhooks whose job has finished and that are due, each leased to the caller
        (a sender that dies leaves it due again when the lease runs out)."""
        now = utcnow()
        unfinished = select(items.c.id).where(
            items.c.job_id == webhooks.c.job_id,
            items.c.status.in_(_values({Status.queued, Status.running}))).exists()
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
                    claimed.append(_delivery(row, attempts=row.attempts + 1))
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

    def webhooks_of(self, job_id: str) -> list[Delivery]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(webhooks).where(webhooks.c.job_id == job_id)
                                .order_by(webhooks.c.created_at)).all()
        return [_delivery(r) for r in rows]

    # -- compatibility APIs: integer task ids (seed 002) -------------------------------------
    def add_compat_task(self, task_id: int, system: str, job_id: str, filename: str) -> None:
        with self._write() as conn:
            conn.execute(insert(compat_tasks).values(
                id=task_id, system=system, job_id=job_id, filename=filename[:300],
                created_at=utcnow()))

    def compat_task_job(self, system: str, task_id: int | None = None,
                        filename: str | None = None) -> str | None:
        """The job behind an integer task id, or behind the newest task of a file name."""
        query = select(compat_tasks.c.job_id).where(compat_tasks.c.system == system)
        if task_id is not None:
            query = query.where(compat_tasks.c.id == task_id)
        if filename is not None:
            query = query.where(compat_tasks.c.filename == filename)
        with self.engine.connect() as conn:
            return conn.execute(
                query.order_by(compat_tasks.c.created_at.desc()).limit(1)).scalar()

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


def _delivery(row: Row[Any], **changes: Any) -> Delivery:
    return Delivery(**{**{f.name: getattr(row, f.name) for f in fields(Delivery)}, **changes})
