"""What every part of the repository shares: the engine, write transactions, row mapping."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.engine import Row

from imgq.domain.models import Claim, Item, Job
from imgq.domain.status import Status
from imgq.store.db import WRITE
from imgq.store.tables import items, jobs

ITEM_FIELDS = [f.name for f in fields(Item)]
JOB_FIELDS = [f.name for f in fields(Job) if f.name != "items"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class RepositoryBase:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._recent_jobs: dict[str, Job] = {}

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            yield conn

    def load_jobs(self, conn: Connection, where: Any) -> list[Job]:
        job_rows = conn.execute(select(jobs).where(where)).all()
        if not job_rows:
            return []
        by_id = {r.id: job_from_row(r) for r in job_rows}
        item_rows = conn.execute(
            select(items).where(items.c.job_id.in_(list(by_id))).order_by(items.c.idx)
        ).all()
        for row in item_rows:
            by_id[row.job_id].items.append(item_from_row(row))
        return list(by_id.values())

    def keys_of_jobs(self, conn: Connection, job_ids: list[str]) -> list[str]:
        rows = conn.execute(
            select(items.c.input_key, items.c.result_key).where(items.c.job_id.in_(job_ids))
        ).all()
        return [k for row in rows for k in row if k]

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))


def owned_by(claim: Claim, sources: Iterable[Status] = (Status.running,)) -> list[Any]:
    """The WHERE clause of a change only the claim's holder may make."""
    return [items.c.id == claim.item.id, items.c.claim_token == claim.token,
            items.c.status.in_(values_of(sources))]


def values_of(statuses: Iterable[Status]) -> list[str]:
    return [s.value for s in statuses]


def db_value(value: Any) -> Any:
    return value.value if isinstance(value, Status) else value


def item_from_row(row: Row[Any]) -> Item:
    data = {f: getattr(row, f) for f in ITEM_FIELDS}
    data["status"] = Status(data["status"])
    return Item(**data)


def job_from_row(row: Row[Any]) -> Job:
    return Job(**{f: getattr(row, f) for f in JOB_FIELDS})
