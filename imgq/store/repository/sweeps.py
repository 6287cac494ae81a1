"""The sweeper's side: lost leases, the outbox of queued items, stuck items, expiry, counts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Text, and_, case, cast, func, or_, select, update

from imgq.domain.status import FINISHED, Status, allowed_from
from imgq.store.repository.base import RepositoryBase, utcnow, values_of
from imgq.store.tables import items, jobs


class SweepStore(RepositoryBase):
    def requeue_lost(self, max_losses: int) -> tuple[list[str], list[str]]:
        """Items whose lease ran out: requeue them, or fail those that lost it `max_losses`
        times. A lost lease is the worker's trouble (killed, cut off from the database), so
        it does not spend the image's attempts."""
        now = utcnow()
        lost = and_(items.c.status == Status.running.value, items.c.lease_until < now)
        with self._write() as conn:
            # SKIP LOCKED: sweepers on several machines never fight over the same rows.
            rows = conn.execute(select(items.c.id, items.c.lease_losses).where(lost)
                                .with_for_update(skip_locked=True)).all()
            retry = [r.id for r in rows if r.lease_losses + 1 < max_losses]
            give_up = [r.id for r in rows if r.lease_losses + 1 >= max_losses]
            if retry:
                conn.execute(
                    update(items).where(lost, items.c.id.in_(retry))
                    .values(status=Status.queued.value, claim_token=None, lease_until=None,
                            lease_losses=items.c.lease_losses + 1,
                            stage="requeued: its worker stopped responding", progress=0)
                )
            if give_up:
                conn.execute(
                    update(items).where(lost, items.c.id.in_(give_up))
                    .values(status=Status.failed.value, claim_token=None, lease_until=None,
                            lease_losses=items.c.lease_losses + 1,
                            finished_at=now, error_code="worker_lost", stage="failed",
                            error_message=f"its worker stopped responding {max_losses} times "
                            "while running it (a crash, a kill or an outage)")
                )
        return retry, give_up

    def due_items(self, limit: int = 1000, due_for: float = 0.0) -> list[tuple[str, str]]:
        """Queued items that are due now (and have been for `due_for` seconds), oldest first,
        with their job's resource class. Rows a worker is claiming right now are skipped."""
        now = utcnow()
        since = now - timedelta(seconds=due_for)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(items.c.id, items.c.resource)
                .where(items.c.status == Status.queued.value,
                       or_(items.c.not_before.is_(None), items.c.not_before <= since),
                       items.c.queued_at <= since)
                .order_by(items.c.queued_at).limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
        return [(r.id, r.resource) for r in rows]

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

    def recent_results(self, since: datetime) -> dict[str, set[str]]:
        """Jobs with an item that ended since `since` (and files still kept): the result keys
        their items recorded, so that stored results nobody recorded can be found."""
        recent = (select(items.c.job_id).where(items.c.finished_at >= since)
                  .distinct().scalar_subquery())
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(items.c.job_id, items.c.result_key).join(jobs, jobs.c.id == items.c.job_id)
                .where(items.c.job_id.in_(recent), jobs.c.data_removed.is_(False))
            ).all()
        found: dict[str, set[str]] = {}
        for row in rows:
            found.setdefault(row.job_id, set()).update([row.result_key] if row.result_key else [])
        return found

    def expired_jobs(self, limit: int = 100) -> list[str]:
        """Jobs past their expiry whose items have all finished and whose files remain."""
        now = utcnow()
        unfinished = select(items.c.id).where(
            items.c.job_id == jobs.c.id, items.c.status.not_in(values_of(FINISHED | {Status.expired}))
        ).exists()
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(jobs.c.id).where(jobs.c.expires_at <= now, jobs.c.data_removed.is_(False),
                                        ~unfinished).limit(limit)
            ).scalars())

    def mark_expired(self, job_id: str) -> None:
        """Keep a tombstone: the job and its items stay, marked expired, without files."""
        with self._write() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(data_removed=True))
            conn.execute(
                update(items)
                .where(items.c.job_id == job_id,
                       items.c.status.in_(values_of(allowed_from(Status.expired))))
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
                select(items.c.resource, func.count())
                .where(items.c.status == Status.queued.value, due).group_by(items.c.resource)
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
