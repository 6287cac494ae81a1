"""The worker's side: claim items in their fair order, keep the lease, record how each ended.

A worker finishing an item and taking the next does both in one transaction
(`finish_and_claim`), so a small item's life costs one write transaction, not two. The claim
statement is built once, at import, with bound parameters.

The claim, an item's end and the next claim run on the driver's connection with the
statements compiled once (`imgq.store.repository.prepared`), with no SQLAlchemy work per
execution. On SQLite: four statements an item (BEGIN IMMEDIATE, the end, the claim, COMMIT).
On PostgreSQL: one statement an item in autocommit, one round trip (the end and the next claim
in one statement, `FINISH_AND_CLAIM`), prepared on the server after its first few runs; a
claim alone or a final end alone is one statement too.

Items are claimed one at a time, each when its worker is about to run it, and each end is
written when the item ends. Claiming several and writing their ends together would spare the
BEGIN and COMMIT of all but one (measured: 0.1 M instructions and about 60 µs of CPU an item,
under 2 % of a small JPEG's), but an item claimed ahead would show as running while it waits,
would still run after a cancel of its job (a fast item ends before its first look at one),
and would hold its place in the fair order against other jobs' items; so it is not done.

An item worker's engine does not test a pooled connection before each use (`make_engine`):
a claim or a finish that finds its connection dropped (the database restarted, a failover)
is made again at once on a fresh one, as the ping would have done.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, literal, or_, select, true, update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from imgq.domain.models import Claim, Item, Job
from imgq.domain.status import Status, allowed_from
from imgq.errors import InvalidTransition
from imgq.store.repository.base import (
    RepositoryBase,
    again_if_dropped,
    item_from_row,
    job_from_row,
    job_from_raw,
    owned_by,
    raw_items,
    status_in,
    utcnow,
)
from imgq.store.repository.prepared import autocommit_connection, prepared, write_transaction
from imgq.store.tables import UTCDateTime, items, jobs


@dataclass(frozen=True)
class Beat:
    """The answer to a heartbeat: is the claim still ours, and was cancel asked?"""

    owned: bool
    cancel_requested: bool


@dataclass(frozen=True)
class Finish:
    """How a claimed item ended, as the change to write: the target state and its columns."""

    claim: Claim
    target: Status
    values: dict[str, Any] = field(default_factory=dict)


_NOW = bindparam("now", type_=UTCDateTime())
_CLAIM_VALUES = {
    "status": Status.running.value, "claim_token": bindparam("token"),
    "attempts": items.c.attempts + 1, "lease_until": bindparam("lease_until", type_=UTCDateTime()),
    "started_at": func.coalesce(items.c.started_at, _NOW), "stage": "starting",
    "not_before": None,
}
_CLAIMABLE = [status_in(allowed_from(Status.running)),
              or_(items.c.not_before.is_(None), items.c.not_before <= _NOW)]

# The next due item of a queue in fair order: the first row of the queue order's index, no
# join. SKIP LOCKED: on PostgreSQL, workers claiming at the same moment take different rows
# instead of waiting on each other (SQLite takes the write lock at BEGIN, so there a claim
# never races). The row it returns is locked and was checked again after locking (PostgreSQL
# re-reads a row changed since the snapshot), so the UPDATE names it by id alone: its key, not
# an index on status that stale statistics made the planner scan for it.
_NEXT_DUE = (
    select(items.c.id)
    .where(*_CLAIMABLE, items.c.resource == bindparam("queue"))
    .order_by(items.c.fair_key, items.c.queued_at, items.c.id).limit(1)
    .with_for_update(skip_locked=True)
    .scalar_subquery()
)
CLAIM_NEXT = (update(items).where(items.c.id == _NEXT_DUE)
              .values(**_CLAIM_VALUES).returning(*items.c))
CLAIM_ONE = (update(items).where(items.c.id == bindparam("item_id"), *_CLAIMABLE)
             .values(**_CLAIM_VALUES).returning(*items.c))
JOB_BY_ID = select(jobs).where(jobs.c.id == bindparam("job_id"))

# How an item ends, one UPDATE per target state, built once: only the claim's holder may
# write it (same id, same token, a state the target may come from). Parameters are named
# "v_<column>" (a bound name may not be a column the statement sets).
_ENDS = {
    Status.succeeded: ("result_key", "result_name", "result_meta", "processing_seconds",
                       "progress", "stage"),
    Status.failed: ("error_code", "error_message", "processing_seconds", "stage"),
    Status.cancelled: ("error_code", "error_message", "processing_seconds", "stage"),
    Status.queued: ("not_before", "error_code", "error_message", "claim_token", "stage",
                    "progress"),
}
FINISH = {
    target: update(items).where(
        items.c.id == bindparam("v_id"), items.c.claim_token == bindparam("v_token"),
        status_in(allowed_from(target)),
    ).values(status=target.value, **{
        c: bindparam(f"v_{c}", type_=items.c[c].type)
        for c in (*columns, "finished_at", "lease_until")})
    for target, columns in _ENDS.items()
}
# A retry also counts against the image's attempts when it is the image's fault.
FINISH[Status.queued] = FINISH[Status.queued].values(
    failures=items.c.failures + bindparam("v_failures", type_=items.c.failures.type))
_SETS = {target: {*columns, "finished_at", "lease_until", *(
    ("failures",) if target == Status.queued else ())} for target, columns in _ENDS.items()}

# PostgreSQL: a final end (succeeded, failed, cancelled: the claim's token stays on the row)
# and the next claim in one statement, two data-modifying WITH queries on one snapshot, atomic
# in autocommit: one round trip instead of BEGIN, two UPDATEs and COMMIT. Its row says whether
# the end was written and carries the claimed item, if any.
_ONE = select(literal(1).label("one")).subquery("one")
_CLAIMED = CLAIM_NEXT.cte("claimed")
FINISH_AND_CLAIM = {
    target: select(
        select(func.count()).select_from(FINISH[target].returning(items.c.id).cte("finished"))
        .scalar_subquery().label("finished_count"),
        *_CLAIMED.c,
    ).select_from(_ONE.outerjoin(_CLAIMED, true()))
    for target in (Status.succeeded, Status.failed, Status.cancelled)
}
_HELD_BY = select(*items.c).where(items.c.claim_token == bindparam("token"))
_STATE = select(items.c.status, items.c.claim_token).where(items.c.id == bindparam("item_id"))


class ClaimStore(RepositoryBase):
    _driver: _DriverPath | None = None  # made at the first claim or end

    def claim(self, item_id: str, lease_seconds: float) -> Claim | None:
        """Take this queued item if it is due. None when someone else has it or it is not due."""
        return again_if_dropped(lambda: self._claim_alone(CLAIM_ONE, {"item_id": item_id},
                                                          lease_seconds))

    def claim_next(self, resource: str, lease_seconds: float) -> Claim | None:
        """Take the queue's next due item in fair order; None when nothing is due."""
        return again_if_dropped(lambda: self._claim_alone(CLAIM_NEXT, {"queue": resource},
                                                          lease_seconds))

    def _claim_alone(self, statement: Any, params: dict[str, Any],
                     lease_seconds: float) -> Claim | None:
        if self.engine.dialect.name == "sqlite":  # the write lock taken at BEGIN
            with self._sqlite_write() as (conn, path):
                return path.claim(conn, statement, params, lease_seconds)
        try:  # one UPDATE is atomic by itself; the job's row that follows never changes
            with autocommit_connection(self.engine) as conn:
                return self._driver_path().claim(conn, statement, params, lease_seconds)
        finally:
            self.writes += 1

    def _driver_path(self) -> _DriverPath:
        if self._driver is None:
            self._driver = _DriverPath(self.engine.dialect, self._recent_jobs)
        return self._driver

    def finish_and_claim(
        self, finish: Finish, resource: str | None, lease_seconds: float
    ) -> tuple[str | None, Claim | None]:
        """Record how an item ended and, when `resource` is given, claim the queue's next due
        item, in one transaction. Returns why the finish was refused (None: it was written) and
        the new claim."""
        if self.engine.dialect.name == "sqlite":
            with self._sqlite_write() as (conn, path):
                return (path.finish(conn, finish),
                        None if resource is None else
                        path.claim(conn, CLAIM_NEXT, {"queue": resource}, lease_seconds))
        if finish.target in FINISH_AND_CLAIM and self.engine.dialect.name == "postgresql":
            return self._final_at_once(finish, resource, lease_seconds)
        committing = False

        def write() -> tuple[str | None, Claim | None]:
            nonlocal committing
            with self._write() as conn:
                refused = self._apply_finish(conn, finish)
                claim = (self._claim(conn, CLAIM_NEXT, {"queue": resource}, lease_seconds)
                         if resource is not None else None)
                committing = True
            return refused, claim

        try:
            return write()
        except DBAPIError as exc:  # again only when nothing can have been committed
            if not exc.connection_invalidated or committing:
                raise
        return write()

    def _final_at_once(self, finish: Finish, resource: str | None,
                       lease_seconds: float) -> tuple[str | None, Claim | None]:
        """A final end (succeeded, failed, cancelled: the claim's token stays on the row) and,
        when `resource` is given, the next claim, in one statement in autocommit (PostgreSQL).
        When its connection drops, whether the statement was committed is read back (the end
        written under this claim's token, the next item held under the new one) before it is
        made again."""
        path = self._driver_path()
        now = utcnow()
        token = str(uuid.uuid4())
        params = {**self._finish_params(finish), "queue": resource, "now": now,
                  "token": token, "lease_until": now + timedelta(seconds=lease_seconds)}

        def made(conn: Any) -> tuple[str | None, Claim | None]:
            if resource is None:
                written = path.run(conn, FINISH[finish.target], params).rowcount
                return (None if written else path.refusal(conn, finish)), None
            row = path.run(conn, FINISH_AND_CLAIM[finish.target], params).fetchone()
            claim = path.claimed(conn, row if row[1] is not None else None, token, _claimed)
            return (None if row[0] else path.refusal(conn, finish)), claim

        try:
            try:
                with autocommit_connection(self.engine) as conn:
                    return made(conn)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
            with autocommit_connection(self.engine) as conn:
                current = path.run(conn, _STATE, {"item_id": finish.claim.item.id}).fetchone()
                if (current is not None and current[1] == finish.claim.token
                        and current[0] == finish.target.value):  # it was committed
                    held = (None if resource is None else
                            path.run(conn, _HELD_BY, {"token": token}).fetchone())
                    return None, path.claimed(conn, held, token, _raw_item)
                return made(conn)
        finally:
            self.writes += 1

    @contextmanager
    def _sqlite_write(self) -> Iterator[tuple[sqlite3.Connection, _DriverPath]]:
        """A write transaction on the driver's connection, with the statements prepared for
        it (`imgq.store.repository.prepared`)."""
        path = self._driver_path()
        try:
            with write_transaction(self.engine) as conn:
                yield conn, path
        finally:
            self.writes += 1

    def _claim(self, conn: Connection, statement: Any, params: dict[str, Any],
               lease_seconds: float) -> Claim | None:
        now = utcnow()
        token = str(uuid.uuid4())
        row = conn.execute(statement, {**params, "now": now, "token": token,
                                       "lease_until": now + timedelta(seconds=lease_seconds)}
                           ).first()
        if row is None:
            return None
        item = item_from_row(row)
        return Claim(item=item, job=self._job_for_claim(conn, item.job_id), token=token)

    def _job_for_claim(self, conn: Connection, job_id: str) -> Job:
        return recent_job(self._recent_jobs, job_id, lambda: job_from_row(
            conn.execute(JOB_BY_ID, {"job_id": job_id}).one()))

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

    # -- how an item ended -------------------------------------------------------------------
    def finish_succeeded(
        self, claim: Claim, result_key: str, result_name: str, result_meta: dict[str, Any],
        processing_seconds: float,
    ) -> None:
        self.finish(succeeded(claim, result_key, result_name, result_meta, processing_seconds))

    def finish_failed(
        self, claim: Claim, code: str, message: str, processing_seconds: float | None = None
    ) -> None:
        self.finish(failed(claim, code, message, processing_seconds))

    def finish_cancelled(self, claim: Claim, processing_seconds: float | None = None) -> None:
        self.finish(cancelled(claim, processing_seconds))

    def retry_later(self, claim: Claim, delay_seconds: float, code: str, message: str,
                    spend: bool = True) -> None:
        self.finish(retry(claim, delay_seconds, code, message, spend))

    def cancel_requested(self, job_id: str) -> bool:
        """Was cancel asked for this job? (A read, cheap enough to ask every second.)"""
        with self.engine.connect() as conn:
            return bool(conn.execute(
                select(jobs.c.cancel_requested).where(jobs.c.id == job_id)).scalar())

    def finish(self, finish: Finish) -> None:
        """Write how the item ended; InvalidTransition when the claim is no longer ours."""
        if self.engine.dialect.name == "sqlite":
            with self._sqlite_write() as (raw, path):
                refused = path.finish(raw, finish)
        elif finish.target in FINISH_AND_CLAIM and self.engine.dialect.name == "postgresql":
            refused, _ = self._final_at_once(finish, None, 0)
        else:
            with self._write() as conn:
                refused = self._apply_finish(conn, finish)
        if refused is not None:
            raise InvalidTransition(refused)

    def _apply_finish(self, conn: Connection, finish: Finish) -> str | None:
        if conn.execute(FINISH[finish.target], self._finish_params(finish)).rowcount:
            return None
        return self._refusal(conn, finish)

    @staticmethod
    def _finish_params(finish: Finish) -> dict[str, Any]:
        claim = finish.claim
        values = {"finished_at": utcnow(), "lease_until": None, **finish.values}
        if not values.keys() <= _SETS[finish.target]:  # a column the statement would drop
            raise ValueError(f"{finish.target.value} cannot set {values.keys() - _SETS[finish.target]}")
        return {**{f"v_{k}": v for k, v in values.items()}, "v_id": claim.item.id,
                "v_token": claim.token}

    def _refusal(self, conn: Connection, finish: Finish) -> str:
        current = conn.execute(_STATE, {"item_id": finish.claim.item.id}).first()
        return refusal(finish, None if current is None else (current.status,
                                                             current.claim_token))


def refusal(finish: Finish, current: tuple[str, str | None] | None) -> str:
    """Why an end was not written: the item's (status, claim token) now, None if gone."""
    claim = finish.claim
    other = current is not None and current[1] != claim.token
    return (f"item {claim.item.id}: refused {finish.target.value}; it is "
            f"{current[0] if current else 'gone'}"
            f"{' and claimed by another worker' if other else ''}")


def recent_job(recent: dict[str, Job], job_id: str, read: Callable[[], Job]) -> Job:
    """The job of a claimed item, read once: a job's pipeline never changes, and what may
    change (cancel) reaches a running item through its heartbeats, so a worker can keep the
    rows of recent jobs."""
    job = recent.get(job_id)
    if job is None:
        job = read()
        if len(recent) >= 256:
            recent.pop(next(iter(recent)))
        recent[job_id] = job
    return job


class _DriverPath:
    """The claim and an item's end on the driver's connection, `sqlite3`'s or psycopg's
    (`Prepared`), with rows read by position."""

    def __init__(self, dialect: Dialect, recent_jobs: dict[str, Job]) -> None:
        self._dialect, self._recent_jobs = dialect, recent_jobs

    def run(self, conn: Any, statement: Any, params: dict[str, Any]) -> Any:
        return prepared(statement, self._dialect).run(conn, params)

    def claim(self, conn: Any, statement: Any, params: dict[str, Any],
              lease_seconds: float) -> Claim | None:
        now = utcnow()
        token = str(uuid.uuid4())
        row = self.run(conn, statement, {
            **params, "now": now, "token": token,
            "lease_until": now + timedelta(seconds=lease_seconds)}).fetchone()
        return self.claimed(conn, row, token, _raw_item)

    def claimed(self, conn: Any, row: Any, token: str,
                item_of: Callable[[Any], Item]) -> Claim | None:
        """The claim of a claimed item's row (None: no row), with its job's."""
        if row is None:
            return None
        item = item_of(row)
        job = recent_job(self._recent_jobs, item.job_id, lambda: job_from_raw(
            self.run(conn, JOB_BY_ID, {"job_id": item.job_id}).fetchone()))
        return Claim(item=item, job=job, token=token)

    def finish(self, conn: Any, finish: Finish) -> str | None:
        """Write the end; why it was refused, or None."""
        if self.run(conn, FINISH[finish.target], ClaimStore._finish_params(finish)).rowcount:
            return None
        return self.refusal(conn, finish)

    def refusal(self, conn: Any, finish: Finish) -> str:
        current = self.run(conn, _STATE, {"item_id": finish.claim.item.id}).fetchone()
        return refusal(finish, None if current is None else (current[0], current[1]))


_raw_item = raw_items(0)  # a row of RETURNING *items.c, as the driver gives it
_claimed = raw_items(1)  # a row of FINISH_AND_CLAIM: the count of ends written, then the item


# -- the ways an item ends ---------------------------------------------------------------------
def succeeded(claim: Claim, result_key: str, result_name: str, result_meta: dict[str, Any],
              processing_seconds: float) -> Finish:
    return Finish(claim, Status.succeeded, {
        "result_key": result_key, "result_name": result_name, "result_meta": result_meta,
        "processing_seconds": processing_seconds, "progress": 100, "stage": "done"})


def failed(claim: Claim, code: str, message: str, processing_seconds: float | None) -> Finish:
    return Finish(claim, Status.failed, {
        "error_code": code, "error_message": message[:2000],
        "processing_seconds": processing_seconds, "stage": "failed"})


def cancelled(claim: Claim, processing_seconds: float | None) -> Finish:
    return Finish(claim, Status.cancelled, {
        "error_code": "cancelled", "error_message": "cancelled while running",
        "processing_seconds": processing_seconds, "stage": "cancelled"})


def retry(claim: Claim, delay_seconds: float, code: str, message: str,
          spend: bool = True) -> Finish:
    """Back to the queue after a delay; `spend`: count it against the image's attempts
    (False for the server's own trouble, which is never the image's fault)."""
    not_before: datetime = utcnow() + timedelta(seconds=delay_seconds)
    return Finish(claim, Status.queued, {
        "not_before": not_before, "error_code": code, "error_message": message[:2000],
        "claim_token": None, "stage": f"retrying in {delay_seconds:.0f} s", "progress": 0,
        "finished_at": None, "failures": 1 if spend else 0})  # added to the count
