"""What every part of the repository shares: the engine, write transactions, row mapping."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    ColumnElement,
    Connection,
    Engine,
    Boolean,
    String,
    Table,
    Text,
    cast,
    bindparam,
    false,
    literal_column,
    select,
    type_coerce,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import DBAPIError

from imgq.domain.access import Scope
from imgq.domain.models import Claim, Item, Job
from imgq.domain.status import Status
from imgq.store.db import WRITE, one_read_options
from imgq.store.tables import UTCDateTime, items, jobs

ITEM_FIELDS = [f.name for f in fields(Item)]
JOB_FIELDS = [f.name for f in fields(Job) if f.name != "items"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


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


def is_locked(exc: DBAPIError) -> bool:
    """Did a SQLite statement fail because another connection held the lock it needed?"""
    return getattr(exc.orig, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY


class RepositoryBase:
    def __init__(self, engine: Engine, status_engine: Engine | None = None) -> None:
        """`status_engine`: the connections of the API's status reads (`JobStore.poll_jobs`),
        when they are not the engine's own (see `imgq.store.db.status_engine`)."""
        self.engine = engine
        self.status_engine = engine if status_engine is None else status_engine
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
        scope (no statement to build, nor its cache key to compute, on each status read).
        One id, the most frequent read, is bound as itself: an expanding IN list is written
        into the SQL at every execution."""
        one = len(job_ids) == 1
        params: dict[str, Any] = {"id": job_ids[0]} if one else {"ids": job_ids}
        if scope.sees_all or scope.ids_open:
            return self.read_versioned(conn, JOB_BY_ID_WITH_ITEMS if one else _BY_IDS, params)
        if scope.owner is None:
            return []
        params["owner"] = scope.owner
        return self.read_versioned(conn, _BY_ID_OF_OWNER if one else _BY_IDS_OF_OWNER, params)

    def read_versioned(self, conn: Connection, statement: Any,
                       params: dict[str, Any]) -> list[tuple[Job, int]]:
        return versioned(conn.execute(statement, params).all())

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


def versioned(rows: Iterable[Any]) -> list[tuple[Job, int]]:
    """Jobs with their versions from the rows of `JOBS_WITH_ITEMS` as the driver gives them."""
    found: dict[str, tuple[Job, list[int]]] = {}
    for row in rows:
        entry = found.get(row[_JOB_ID])
        if entry is None:
            entry = found[row[_JOB_ID]] = (job_from_raw(row), [row[_JOB_VERSION]])
        if row[_ITEM_ID] is not None:
            entry[0].items.append(_item_of(row))
            entry[1].append(row[_ITEM_VERSION])
    return [(job, sum(versions)) for job, versions in found.values()]


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


# The read of jobs with their items takes every column as the driver gives it (no SQLAlchemy
# result processing per value, which cost a status read more than its query) and converts it
# here, once per job for the job's columns that the join repeats on every item row:
# datetimes (SQLite: text parsed by `datetime.fromisoformat`; PostgreSQL: already datetimes),
# JSON (SQLite: text; PostgreSQL: decoded by the driver), booleans (SQLite: 0/1). The job's
# JSON columns are read as text on every backend, so PostgreSQL's driver decodes them once
# per job rather than once per item row.
_RAW = String()
_JOB_JSON = frozenset(c.name for c in jobs.c if isinstance(c.type, JSON))
_JOB_COLUMNS = [cast(c, Text()).label(c.name) if c.name in _JOB_JSON
                else type_coerce(c, _RAW).label(c.name) for c in jobs.c]
#: An item's columns as the driver gives them, in table order (`raw_items` reads them).
ITEM_COLUMNS = [type_coerce(c, _RAW).label(f"item_{c.name}") for c in items.c]

# Every column of a job then every column of its items (none for a job without items), read
# by position: no per-row lookup by name.
JOBS_WITH_ITEMS = (select(*_JOB_COLUMNS, *ITEM_COLUMNS)
                   .select_from(jobs.outerjoin(items, items.c.job_id == jobs.c.id))
                   .order_by(items.c.idx))
_BY_IDS = JOBS_WITH_ITEMS.where(jobs.c.id.in_(bindparam("ids", expanding=True)))
_BY_IDS_OF_OWNER = _BY_IDS.where(jobs.c.owner == bindparam("owner"))
JOB_BY_ID_WITH_ITEMS = JOBS_WITH_ITEMS.where(jobs.c.id == bindparam("id"))  # whoever owns it
_BY_ID_OF_OWNER = JOB_BY_ID_WITH_ITEMS.where(jobs.c.owner == bindparam("owner"))
_JOB_POS = {c.name: n for n, c in enumerate(jobs.c)}
_ITEM_POS = {c.name: len(jobs.c) + n for n, c in enumerate(items.c)}
_JOB_ID, _JOB_VERSION = _JOB_POS["id"], _JOB_POS["version"]
_ITEM_ID, _ITEM_VERSION = _ITEM_POS["id"], _ITEM_POS["version"]


def _kinds(table: Table, names: list[str]) -> list[str]:
    """How each named column's raw value becomes the domain's: "dt", "json", "bool", "status"
    or "" (as it is)."""
    def kind(name: str) -> str:
        column_type = table.c[name].type
        if isinstance(column_type, UTCDateTime):
            return "dt"
        if isinstance(column_type, JSON):
            return "json"
        if isinstance(column_type, Boolean):
            return "bool"
        return "status" if table is items and name == "status" else ""
    return [kind(n) for n in names]


def _converter(kinds: list[str], positions: list[int]) -> Any:
    """A function from a raw row to the field values in `positions`' order, with each
    conversion named in `kinds` (none: the value as it is)."""
    steps = [(n, k) for n, k in enumerate(kinds) if k]

    def convert(row: Any) -> list[Any]:
        values = [row[p] for p in positions]
        for n, k in steps:
            v = values[n]
            if v is None:
                continue
            if k == "dt":
                values[n] = _DATETIMES.get(v) or raw_datetime(v)
            elif k == "json":
                if isinstance(v, str):
                    values[n] = raw_json(v)
            elif k == "bool":
                values[n] = bool(v)
            else:
                values[n] = _STATUSES[v]
        return values
    return convert


_STATUSES = {s.value: s for s in Status}
_job_values = _converter(_kinds(jobs, JOB_FIELDS), [_JOB_POS[f] for f in JOB_FIELDS])
_item_values = _converter(_kinds(items, ITEM_FIELDS), [_ITEM_POS[f] for f in ITEM_FIELDS])
_ITEM_KINDS = _kinds(items, ITEM_FIELDS)
_ITEM_IN_TABLE = [[c.name for c in items.c].index(f) for f in ITEM_FIELDS]


def raw_items(first: int) -> Any:
    """A function from a row that has `ITEM_COLUMNS` from position `first` on to its Item."""
    values = _converter(_ITEM_KINDS, [first + n for n in _ITEM_IN_TABLE])
    return lambda row: Item(*values(row))


#: Stored datetimes (SQLite's text) already parsed: a job's items share their queued_at, and
#: a poller reads the same finished items again and again. Bounded: emptied when full.
_DATETIMES: dict[Any, datetime] = {}
_MAX_DATETIMES = 8192
_scan_json: Callable[[str, int], tuple[Any, int]] = (
    json.JSONDecoder().scan_once)  # type: ignore[attr-defined]


def raw_json(text: str) -> Any:
    """`json.loads` of the JSON SQLAlchemy wrote (no surrounding whitespace), by the
    decoder's C scanner without the wrapper's whitespace matching; any other text by
    `json.loads`."""
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


def raw_datetime(value: Any) -> datetime:
    """A stored datetime as a driver gives it (text on SQLite, in the format SQLAlchemy
    writes; a datetime on PostgreSQL) as the aware datetime `UTCDateTime` reads."""
    text = value
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
    if isinstance(text, str):  # (a driver's datetimes are not kept: equal ones in other zones)
        if len(_DATETIMES) >= _MAX_DATETIMES:
            _DATETIMES.clear()
        _DATETIMES[text] = value
    return value  # type: ignore[no-any-return]


def job_from_raw(row: Any) -> Job:
    """A job from its columns in table order as the driver gives them."""
    return Job(*_job_values(row))


def _item_of(row: Row[Any]) -> Item:
    return Item(*_item_values(row))


def item_from_row(row: Row[Any]) -> Item:
    data = {f: getattr(row, f) for f in ITEM_FIELDS}
    data["status"] = Status(data["status"])
    return Item(**data)


def job_from_row(row: Row[Any]) -> Job:
    return Job(**{f: getattr(row, f) for f in JOB_FIELDS})
