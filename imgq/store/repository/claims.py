"""The worker's side: claim items in their fair order, keep the lease, record how each ended.

A worker finishing an item and taking the next does both in one transaction
(`finish_and_claim`), so a small item's life costs one write transaction, not two. The claim
statement is built once, at import, with bound parameters. On PostgreSQL a claim alone is one
statement in autocommit (one round trip, no BEGIN and COMMIT around it).

An item worker's engine does not test a pooled connection before each use (`make_engine`):
a claim or a finish that finds its connection dropped (the database restarted, a failover)
is made again at once on a fresh one, as the ping would have done.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, bindparam, func, literal, or_, select, true, update
from sqlalchemy.exc import DBAPIError

from imgq.domain.models import Claim, Job
from imgq.domain.status import Status, allowed_from
from imgq.errors import InvalidTransition
from imgq.store.repository.base import (
    RepositoryBase,
    item_from_row,
    job_from_row,
    owned_by,
    status_in,
    utcnow,
)
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

# The next due item of a queue in fair order. SKIP LOCKED: on PostgreSQL, workers claiming at
# the same moment take different rows instead of waiting on each other (SQLite takes the write
# lock at BEGIN, so there a claim never races).
_NEXT_DUE = (
    select(items.c.id).join(jobs, jobs.c.id == items.c.job_id)
    .where(*_CLAIMABLE, jobs.c.resource == bindparam("resource"))
    .order_by(items.c.fair_key, items.c.queued_at, items.c.id).limit(1)
    .with_for_update(of=items, skip_locked=True)
    .scalar_subquery()
)
CLAIM_NEXT = (update(items).where(items.c.id == _NEXT_DUE, *_CLAIMABLE)
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


T = TypeVar("T")


def again_if_dropped(action: Callable[[], T]) -> T:
    """Run `action` (one statement); once more at once when its connection turned out dropped
    (SQLAlchemy has then invalidated it, and the pool's older connections with it)."""
    try:
        return action()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return action()


class ClaimStore(RepositoryBase):
    def claim(self, item_id: str, lease_seconds: float) -> Claim | None:
        """Take this queued item if it is due. None when someone else has it or it is not due."""
        return again_if_dropped(lambda: self._claim_alone(CLAIM_ONE, {"item_id": item_id},
                                                          lease_seconds))

    def claim_next(self, resource: str, lease_seconds: float) -> Claim | None:
        """Take the queue's next due item in fair order; None when nothing is due."""
        return again_if_dropped(lambda: self._claim_alone(CLAIM_NEXT, {"resource": resource},
                                                          lease_seconds))

    def _claim_alone(self, statement: Any, params: dict[str, Any],
                     lease_seconds: float) -> Claim | None:
        if self.engine.dialect.name == "sqlite":  # the write lock taken at BEGIN (db.py)
            with self._write() as conn:
                return self._claim(conn, statement, params, lease_seconds)
        try:  # one UPDATE is atomic by itself; the job's row that follows never changes
            with self.engine.connect().execution_options(**self.one_read) as conn:
                return self._claim(conn, statement, params, lease_seconds)
        finally:
            self.writes += 1

    def finish_and_claim(
        self, finish: Finish, resource: str | None, lease_seconds: float
    ) -> tuple[str | None, Claim | None]:
        """Record how an item ended and, when `resource` is given, claim the queue's next due
        item, in one transaction. Returns why the finish was refused (None: it was written) and
        the new claim."""
        if (resource is not None and finish.target in FINISH_AND_CLAIM
                and self.engine.dialect.name == "postgresql"):
            return self._finish_and_claim_at_once(finish, resource, lease_seconds)
        committing = False

        def write() -> tuple[str | None, Claim | None]:
            nonlocal committing
            with self._write() as conn:
                refused = self._apply_finish(conn, finish)
                claim = (self._claim(conn, CLAIM_NEXT, {"resource": resource}, lease_seconds)
                         if resource is not None else None)
                committing = True
            return refused, claim

        try:
            return write()
        except DBAPIError as exc:  # again only when nothing can have been committed
            if not exc.connection_invalidated or committing:
                raise
        return write()

    def _finish_and_claim_at_once(self, finish: Finish, resource: str,
                                  lease_seconds: float) -> tuple[str | None, Claim | None]:
        """`finish_and_claim` in one statement (PostgreSQL, a final end). When its connection
        drops, whether the statement was committed is read back (the end written under this
        claim's token, the next item held under the new one) before it is made again."""
        now = utcnow()
        token = str(uuid.uuid4())
        params = {**self._finish_params(finish), "resource": resource, "now": now,
                  "token": token, "lease_until": now + timedelta(seconds=lease_seconds)}

        def made(conn: Connection) -> tuple[str | None, Claim | None]:
            row = conn.execute(FINISH_AND_CLAIM[finish.target], params).one()
            claim = self._claim_of(conn, row if row.id is not None else None, token)
            return (None if row.finished_count else self._refusal(conn, finish)), claim

        try:
            try:
                with self.engine.connect().execution_options(**self.one_read) as conn:
                    return made(conn)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
            with self.engine.connect().execution_options(**self.one_read) as conn:
                current = conn.execute(_STATE, {"item_id": finish.claim.item.id}).first()
                if (current is not None and current.claim_token == finish.claim.token
                        and current.status == finish.target.value):  # it was committed
                    held = conn.execute(_HELD_BY, {"token": token}).first()
                    return None, self._claim_of(conn, held, token)
                return made(conn)
        finally:
            self.writes += 1

    def _claim_of(self, conn: Connection, row: Any, token: str) -> Claim | None:
        if row is None:
            return None
        item = item_from_row(row)
        return Claim(item=item, job=self._job_for_claim(conn, item.job_id), token=token)

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
        # A job's pipeline never changes, and what may change (cancel) reaches a running item
        # through its heartbeats, so a worker can keep the rows of recent jobs.
        job = self._recent_jobs.get(job_id)
        if job is None:
            job = job_from_row(conn.execute(JOB_BY_ID, {"job_id": job_id}).one())
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
        """Why an end was not written."""
        claim = finish.claim
        current = conn.execute(_STATE, {"item_id": claim.item.id}).first()
        other = current is not None and current.claim_token != claim.token
        return (f"item {claim.item.id}: refused {finish.target.value}; it is "
                f"{current.status if current else 'gone'}"
                f"{' and claimed by another worker' if other else ''}")


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
