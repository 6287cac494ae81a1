"""What every part of the repository shares: the engine, write transactions, row mapping."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Connection,
    Engine,
    String,
    bindparam,
    false,
    literal_column,
    select,
    type_coerce,
)
from sqlalchemy.engine import Row

from imgq.domain.access import Scope
from imgq.domain.models import Claim, Item, Job
from imgq.domain.status import Status
from imgq.store.db import WRITE, one_read_options
from imgq.store.tables import items, jobs

ITEM_FIELDS = [f.name for f in fields(Item)]
JOB_FIELDS = [f.name for f in fields(Job) if f.name != "items"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class RepositoryBase:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._recent_jobs: dict[str, Job] = {}
        #: Write transactions this process has committed: a cache of reads made before the
        #: number changed may be out of date with this process's own changes.
        self.writes = 0
        self.one_read = one_read_options(engine)  # execution options of a one-SELECT read

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
                yield conn
        finally:
            self.writes += 1

    def load_jobs(self, conn: Connection, where: Any) -> list[Job]:
        return [job for job, _ in self.load_versioned(conn, where)]

    def load_versioned(self, conn: Connection, where: Any) -> list[tuple[Job, int]]:
        """Jobs with their items, in one query, each with its version (a number that grows
        with every change to the job or one of its items)."""
        return self.read_versioned(conn, JOBS_WITH_ITEMS.where(where), {})

    def read_by_ids(self, conn: Connection, job_ids: list[str],
                    scope: Scope) -> list[tuple[Job, int]]:
        """`load_versioned` of jobs named by id, with a statement built once per kind of
        scope (no statement to build, nor its cache key to compute, on each status read)."""
        if scope.sees_all or scope.ids_open:
            return self.read_versioned(conn, _BY_IDS, {"ids": job_ids})
        if scope.owner is None:
            return []
        return self.read_versioned(conn, _BY_IDS_OF_OWNER, {"ids": job_ids,
                                                             "owner": scope.owner})

    def read_versioned(self, conn: Connection, statement: Any,
                       params: dict[str, Any]) -> list[tuple[Job, int]]:
        found: dict[str, tuple[Job, list[int]]] = {}
        for row in conn.execute(statement, params):
            entry = found.get(row[_JOB_ID])
            if entry is None:
                entry = found[row[_JOB_ID]] = (_job_of(row), [row[_JOB_VERSION]])
            if row[_ITEM_ID] is not None:
                entry[0].items.append(_item_of(row))
                entry[1].append(row[_ITEM_VERSION])
        return [(job, sum(versions)) for job, versions in found.values()]

    def keys_of_jobs(self, conn: Connection, job_ids: list[str]) -> list[str]:
        rows = conn.execute(
            select(items.c.input_key, items.c.result_key).where(items.c.job_id.in_(job_ids))
        ).all()
        extras = conn.execute(select(jobs.c.extra).where(jobs.c.id.in_(job_ids))).scalars()
        attached = [a["key"] for extra in extras
                    for a in (extra or {}).get("attachments", {}).values()]
        return [k for row in rows for k in row if k] + attached

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))


def visible(scope: Scope, by_id: bool = True) -> list[ColumnElement[bool]]:
    """The WHERE clause that keeps a caller to the jobs its scope opens. `by_id`: the job is
    named by its id (in the keyless mode the id is a capability), not found by a list."""
    if scope.sees_all or (by_id and scope.ids_open):
        return []
    if scope.owner is None:
        return [false()]
    return [jobs.c.owner == scope.owner]


def owned_by(claim: Claim, sources: Iterable[Status] = (Status.running,)) -> list[Any]:
    """The WHERE clause of a change only the claim's holder may make."""
    return [items.c.id == claim.item.id, items.c.claim_token == claim.token,
            status_in(sources)]


def values_of(statuses: Iterable[Status]) -> list[str]:
    return [s.value for s in statuses]


def status_in(statuses: Iterable[Status]) -> ColumnElement[bool]:
    """`items.status IN ('queued', ...)` with the states written into the SQL: a list bound
    as a parameter is expanded into the statement at every execution (a regular expression
    over its text), which costs a worker more than the database's own work on a claim."""
    return items.c.status.in_([literal_column(f"'{s.value}'") for s in sorted(statuses)])


def db_value(value: Any) -> Any:
    return value.value if isinstance(value, Status) else value


# The job's JSON columns as the driver gives them (text on SQLite, already decoded on
# PostgreSQL): the join repeats them on every item row, and they are decoded once per job
# (`_job_of`) rather than once per row.
_JOB_JSON = frozenset(c.name for c in jobs.c if isinstance(c.type, JSON))
_JOB_COLUMNS = [type_coerce(c, String()).label(c.name) if c.name in _JOB_JSON else c
                for c in jobs.c]

# Every column of a job then every column of its items (none for a job without items), read
# by position: no per-row lookup by name.
JOBS_WITH_ITEMS = (select(*_JOB_COLUMNS, *items.c)
                   .select_from(jobs.outerjoin(items, items.c.job_id == jobs.c.id))
                   .order_by(items.c.idx))
_BY_IDS = JOBS_WITH_ITEMS.where(jobs.c.id.in_(bindparam("ids", expanding=True)))
_BY_IDS_OF_OWNER = _BY_IDS.where(jobs.c.owner == bindparam("owner"))
_JOB_POS = {c.name: n for n, c in enumerate(jobs.c)}
_ITEM_POS = {c.name: len(jobs.c) + n for n, c in enumerate(items.c)}
_JOB_ID, _JOB_VERSION = _JOB_POS["id"], _JOB_POS["version"]
_ITEM_ID, _ITEM_VERSION = _ITEM_POS["id"], _ITEM_POS["version"]
_JOB_AT = [_JOB_POS[f] for f in JOB_FIELDS]
_ITEM_AT = [_ITEM_POS[f] for f in ITEM_FIELDS]
_ITEM_STATUS = ITEM_FIELDS.index("status")


def _job_of(row: Row[Any]) -> Job:
    values = dict(zip(JOB_FIELDS, [row[n] for n in _JOB_AT]))
    for name in _JOB_JSON:
        if isinstance(values[name], str):
            values[name] = json.loads(values[name])
    return Job(**values)


def _item_of(row: Row[Any]) -> Item:
    values = [row[n] for n in _ITEM_AT]
    values[_ITEM_STATUS] = Status(values[_ITEM_STATUS])
    return Item(**dict(zip(ITEM_FIELDS, values)))


def item_from_row(row: Row[Any]) -> Item:
    data = {f: getattr(row, f) for f in ITEM_FIELDS}
    data["status"] = Status(data["status"])
    return Item(**data)


def job_from_row(row: Row[Any]) -> Job:
    return Job(**{f: getattr(row, f) for f in JOB_FIELDS})
