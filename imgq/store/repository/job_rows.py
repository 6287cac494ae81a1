"""A job's rows written in one statement on PostgreSQL: the job, its items and their place in
the queue's fair order, one round trip in autocommit.

Through Core a submit cost the fleet's API a round trip to test the pooled connection, BEGIN,
the job's INSERT, the fair order's read, the items' INSERT and COMMIT, each parsed and run by
the server. Here the job's row and its items' rows travel as two JSON parameters, which the
server turns into rows (`json_populate_record[set]`, by column name); the fair start
(`jobs._fair_start`: the queue's head, or after the owner's own queued items) is computed
in the same statement, on the same snapshot. One statement is atomic by itself: the job and
its items are committed together or not at all.

A statement whose connection drops before its answer may or may not have been committed: the
job's id (made by the API) is looked up on a fresh connection first, and the statement is
made again only when the job is not there (`JOB_EXISTS`), so a dropped connection never makes
a job twice nor loses one.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from imgq.domain.models import Item, Job
from imgq.store.repository.base import ITEM_FIELDS, JOB_FIELDS, db_value
from imgq.store.tables import items, jobs

_JOB_COLUMNS = [c.name for c in jobs.c]
_ITEM_COLUMNS = [c.name for c in items.c]
# Columns a job's or an item's fields do not carry, as every new row has them.
_NEW_JOB = {"version": 0}
_NEW_ITEM = {"version": 0, "fair_key": 0}  # fair_key: computed by the statement
if set(_JOB_COLUMNS) != {*JOB_FIELDS, *_NEW_JOB}:
    raise RuntimeError("jobs: a column that JOB_FIELDS does not fill")
if set(_ITEM_COLUMNS) != {*ITEM_FIELDS, *_NEW_ITEM, "owner", "resource"}:
    raise RuntimeError("items: a column that ITEM_FIELDS does not fill")
if hasattr(Item, "__slots__") or list(Item.__dataclass_fields__) != ITEM_FIELDS:
    raise RuntimeError("Item: create_params reads its fields from its __dict__")


def _listed(names: list[str], prefix: str = "") -> str:
    return ", ".join(f"{prefix}{n}" for n in names)


_QUEUED = "status = 'queued' AND resource = %(resource)s"
CREATE_JOB = (
    f"WITH new_job AS (INSERT INTO jobs ({_listed(_JOB_COLUMNS)}) "
    f"SELECT {_listed(_JOB_COLUMNS, 'j.')} FROM json_populate_record(NULL::jobs, %(job)s::json) AS j), "
    "fair AS (SELECT GREATEST("
    f"COALESCE((SELECT min(fair_key) FROM items WHERE {_QUEUED}), 0), "
    f"(SELECT max(fair_key) + 1 FROM items WHERE {_QUEUED} AND owner = %(owner)s)) AS first) "
    f"INSERT INTO items ({_listed(_ITEM_COLUMNS)}) "
    "SELECT " + ", ".join("fair.first + i.ordinality - 1" if n == "fair_key" else f"i.{n}"
                          for n in _ITEM_COLUMNS)
    + " FROM json_populate_recordset(NULL::items, %(items)s::json) WITH ORDINALITY AS i, fair")
#: Was a job written (after a connection dropped mid-statement)?
JOB_EXISTS = "SELECT 1 FROM jobs WHERE id = %(id)s"


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:  # as UTCDateTime refuses it
            raise ValueError("naive datetime given to the store")
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a column value")


_encode = json.JSONEncoder(default=_json_default, separators=(",", ":")).encode


def create_params(job: Job) -> dict[str, Any]:
    """`CREATE_JOB`'s parameters for the job and its items (their order: the fair order)."""
    row = {f: getattr(job, f) for f in JOB_FIELDS}
    row.update(_NEW_JOB)
    shared = {**_NEW_ITEM, "owner": job.owner, "resource": job.resource}
    rows = []
    for item in job.items:  # a dataclass's fields are its __dict__ (ITEM_FIELDS)
        values = {**item.__dict__, **shared}
        values["status"] = db_value(item.status)
        rows.append(values)
    return {"job": _encode(row), "items": _encode(rows), "owner": job.owner,
            "resource": job.resource}
