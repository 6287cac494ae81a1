"""Quotas per owner: items queued or running, items per UTC day, bytes stored.

The check runs in the transaction that inserts the job (`JobStore.create_job`), after the
owner's row of daily usage is bumped: that row's lock makes two submissions of one owner wait
for each other on PostgreSQL (SQLite writes one at a time anyway), so two racing requests
cannot both slip under a quota.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects import postgresql, sqlite

from imgq.domain.access import Quotas
from imgq.domain.models import Job
from imgq.domain.status import Status
from imgq.errors import QuotaExceeded
from imgq.store.repository.base import RepositoryBase, utcnow, values_of
from imgq.store.tables import daily_usage, items, jobs

ACTIVE = values_of({Status.queued, Status.running})
#: A client over its active-items quota may try again when some items have finished.
ACTIVE_RETRY_SECONDS = 30


class UsageStore(RepositoryBase):
    def check_quotas(self, job: Job, quotas: Quotas) -> None:
        """Raise QuotaExceeded if the job would take its owner over a quota (read only: the
        same check runs again, authoritative, when the job is stored)."""
        with self.engine.connect() as conn:
            check_quotas(conn, job, quotas, items_today=self._items_today(conn, job.owner))

    def _items_today(self, conn: Connection, owner: str | None) -> int:
        return conn.execute(select(daily_usage.c.submitted).where(
            daily_usage.c.owner == owner, daily_usage.c.day == _day(utcnow()))).scalar() or 0


def count_submission(conn: Connection, job: Job) -> int:
    """Add the job's items to its owner's count of the day; return the new count."""
    values = {"owner": job.owner, "day": _day(utcnow()), "submitted": len(job.items)}
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    upsert = dialect.insert(daily_usage).values(**values)
    upsert = upsert.on_conflict_do_update(
        index_elements=["owner", "day"], set_={"submitted": daily_usage.c.submitted + len(job.items)})
    conn.execute(upsert)
    return int(conn.execute(select(daily_usage.c.submitted).where(
        daily_usage.c.owner == values["owner"], daily_usage.c.day == values["day"])).scalar_one())


def check_quotas(conn: Connection, job: Job, q: Quotas, items_today: int) -> None:
    """items_today: the owner's items of the day, this job's included or not (see callers)."""
    n = len(job.items)
    if q.items_per_day and items_today + n > q.items_per_day:
        raise QuotaExceeded(
            f"quota of items per day used up: this key may submit {q.items_per_day} items per "
            f"UTC day, {max(0, q.items_per_day - items_today)} are left today and this job has "
            f"{n}",
            retry_after=_seconds_to_midnight(), quota="items_per_day", limit=q.items_per_day)
    mine = items.c.owner == job.owner
    if q.active_items:
        active = conn.execute(select(func.count()).select_from(items)
                              .where(mine, items.c.status.in_(ACTIVE))).scalar_one()
        if active + n > q.active_items:
            raise QuotaExceeded(
                f"quota of active items reached: this key may have {q.active_items} items "
                f"queued or running at once; {active} are, and this job adds {n}",
                retry_after=ACTIVE_RETRY_SECONDS, quota="active_items", limit=q.active_items)
    if q.stored_bytes:
        stored = _stored_bytes(conn, job.owner)
        adding = sum(int(i.input_meta.get("bytes", 0)) for i in job.items)
        if stored + adding > q.stored_bytes:
            raise QuotaExceeded(
                f"quota of bytes stored reached: this key may keep {q.stored_bytes} bytes of "
                f"inputs and results; {stored} are stored and this job adds {adding}; delete "
                "jobs or wait until they expire",
                retry_after=_seconds_to_expiry(conn, job.owner), quota="stored_bytes",
                limit=q.stored_bytes)


def _stored_bytes(conn: Connection, owner: str | None) -> int:
    size = (func.coalesce(items.c.input_meta["bytes"].as_integer(), 0)
            + func.coalesce(items.c.result_meta["bytes"].as_integer(), 0))
    return int(conn.execute(
        select(func.coalesce(func.sum(size), 0))
        .where(items.c.owner == owner, items.c.status != Status.expired.value)).scalar_one())


def _seconds_to_expiry(conn: Connection, owner: str | None) -> float:
    first = conn.execute(select(func.min(jobs.c.expires_at)).where(
        jobs.c.owner == owner, jobs.c.data_removed.is_(False))).scalar()
    return max(1.0, (first - utcnow()).total_seconds()) if first else 60.0


def _day(when: datetime) -> str:
    return when.strftime("%Y-%m-%d")


def _seconds_to_midnight() -> float:
    now = utcnow()
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()
