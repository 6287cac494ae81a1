"""Jobs as clients see them: create, read, list, cancel, delete; each within a `Scope`."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError, OperationalError

from imgq.domain.access import SYSTEM, Quotas, Scope
from imgq.domain.models import Item, Job
from imgq.domain.status import Status
from imgq.errors import NotFound
from imgq.store.repository.base import (
    ITEM_COLUMNS,
    ITEM_FIELDS,
    JOB_BY_ID_WITH_ITEMS,
    JOB_FIELDS,
    RepositoryBase,
    again_if_dropped,
    db_value,
    is_locked,
    item_from_row,
    raw_items,
    utcnow,
    versioned,
    visible,
)
from imgq.store.repository.job_rows import CREATE_JOB, JOB_EXISTS, create_params
from imgq.store.repository.outbox import WEBHOOK_PENDING
from imgq.store.repository.prepared import (
    autocommit_connection,
    prepared,
    read_row,
    read_rows,
    write_transaction,
)
from imgq.store.repository.usage import check_quotas, count_submission
from imgq.store.tables import items, jobs, webhooks

if TYPE_CHECKING:
    from imgq.store.repository.server_polls import ServerPolls

# A job's removal flag and one of its items (NULLs when it has none at that index).
ITEM_OF_JOB = (select(jobs.c.data_removed, *ITEM_COLUMNS)
               .select_from(jobs.outerjoin(items, and_(items.c.job_id == jobs.c.id,
                                                      items.c.idx == bindparam("index"))))
               .where(jobs.c.id == bindparam("job_id")))
ITEM_OF_OWNERS_JOB = ITEM_OF_JOB.where(jobs.c.owner == bindparam("owner"))
_item_of_job = raw_items(1)  # its columns as the driver gives them (base.ITEM_COLUMNS)

# The lowest fair key still queued in a queue: the head of its fair order.
QUEUE_HEAD = (select(func.min(items.c.fair_key))
              .where(items.c.status == Status.queued.value,
                     items.c.resource == bindparam("resource")))

# The highest fair key of an owner's queued items in a queue: where its next items go after.
OWNER_LAST = (select(func.max(items.c.fair_key))
              .where(items.c.status == Status.queued.value, items.c.owner == bindparam("owner"),
                     items.c.resource == bindparam("resource")))


# Built once: a statement made per call (`insert(jobs).values(...)`) costs SQLAlchemy its
# construction and cache key on every submit.
INSERT_JOB = insert(jobs)
INSERT_ITEMS = insert(items)


def _item_row(item: Item, fair_key: int, job: Job) -> dict[str, object]:
    row = {f: db_value(getattr(item, f)) for f in ITEM_FIELDS}
    row["fair_key"], row["owner"], row["resource"] = fair_key, job.owner, job.resource
    return row


def _item_of_job_query(job_id: str, index: int,
                       scope: Scope) -> tuple[Select[Any], dict[str, object]]:
    """The statement of `get_job_item` for this scope, and its parameters."""
    params: dict[str, object] = {"job_id": job_id, "index": index}
    if scope.sees_all or scope.ids_open:  # as visible(scope): built once, at import
        return ITEM_OF_JOB, params
    if scope.owner is None:
        raise NotFound(f"job {job_id} not found")
    params["owner"] = scope.owner
    return ITEM_OF_OWNERS_JOB, params


def _job_item(job_id: str, row: Sequence[Any] | None) -> tuple[bool, Item | None]:
    if row is None:
        raise NotFound(f"job {job_id} not found")
    return bool(row[0]), _item_of_job(row) if row[1] is not None else None


def _fair_start(job: Job, scalar: Callable[[Select[Any], dict[str, object]], Any]) -> int:
    """Where the job's items go in their queue's fair order: at the queue's head (the lowest
    key still queued), or after the owner's own queued items if those reach further. So an
    owner with one item waits for a few items, not for another's batch, and an owner's later
    jobs queue behind its earlier ones. A job without an owner is its own. `scalar` runs a
    read in the job's write transaction and gives its one value."""
    start = int(scalar(QUEUE_HEAD, {"resource": job.resource}) or 0)
    if job.owner is not None:
        last = scalar(OWNER_LAST, {"resource": job.resource, "owner": job.owner})
        if last is not None:
            start = max(start, int(last) + 1)
    return start


class JobStore(RepositoryBase):
    def create_job(self, job: Job, callback_url: str | None = None, base_url: str = "",
                   quotas: Quotas | None = None) -> None:
        """Store the job; with quotas, only if it keeps its owner within them (else
        QuotaExceeded, and nothing is stored)."""
        if quotas is None and not callback_url:
            if self.engine.dialect.name == "sqlite":
                self._create_on_driver(job)
                return
            if self.polls_on_loop:  # PostgreSQL: one statement (job_rows)
                self._create_at_once(job)
                return
        with self._write() as conn:
            if quotas is not None:
                today = count_submission(conn, job)  # locks the owner's row (usage.py)
                check_quotas(conn, job, quotas, items_today=today - len(job.items))
            conn.execute(INSERT_JOB, {f: getattr(job, f) for f in JOB_FIELDS})
            first = _fair_start(job, lambda statement, values: conn.execute(
                statement, values).scalar())
            conn.execute(INSERT_ITEMS, [_item_row(i, first + n, job)
                                        for n, i in enumerate(job.items)])
            if callback_url:  # the outbox row commits with the job, or neither does
                conn.execute(insert(webhooks).values(
                    id=str(uuid.uuid4()), job_id=job.id, url=callback_url, base_url=base_url,
                    status=WEBHOOK_PENDING, attempts=0, next_attempt_at=job.created_at,
                    created_at=job.created_at))

    def _create_at_once(self, job: Job) -> None:
        """`create_job` on PostgreSQL in one statement in autocommit (`job_rows`), made again
        on a fresh connection when its connection dropped and the job is not there."""
        params = create_params(job)

        def create(conn: Any) -> None:
            conn.execute(CREATE_JOB, params)

        try:
            try:
                with autocommit_connection(self.engine) as conn:
                    create(conn)
                    return
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
            with autocommit_connection(self.engine) as conn:
                if conn.execute(JOB_EXISTS, {"id": job.id}).fetchone() is None:
                    create(conn)
        finally:
            self.writes += 1

    async def create_job_on_loop(self, job: Job) -> None:
        """`create_job` without quotas nor a callback, on the caller's event loop where
        `polls_on_loop` (PostgreSQL through psycopg): one statement on the status reads'
        connection (`server_polls`), no thread, no pooled connection to test."""
        try:
            await self._server_polls.create(CREATE_JOB, create_params(job), job.id)
        finally:
            self.writes += 1

    def _create_on_driver(self, job: Job) -> None:
        """`create_job`'s statements on SQLite's own connection, compiled once (`prepared`):
        through Core, each item's row cost its parameters' processing per execution."""
        dialect = self.engine.dialect
        try:
            with write_transaction(self.engine) as conn:
                prepared(INSERT_JOB, dialect).run(
                    conn, {**{f: getattr(job, f) for f in JOB_FIELDS}, "version": 0})
                first = _fair_start(job, lambda statement, values: prepared(
                    statement, dialect).run(conn, values).fetchone()[0])
                rows = prepared(INSERT_ITEMS, dialect)
                conn.executemany(rows.sql, [
                    rows.params({**_item_row(i, first + n, job), "version": 0})
                    for n, i in enumerate(job.items)])
        finally:
            self.writes += 1

    def get_job(self, job_id: str, *, scope: Scope) -> Job:
        found = self.get_jobs([job_id], scope=scope)
        if not found:
            raise NotFound(f"job {job_id} not found")
        return found[0]

    def get_job_versioned(self, job_id: str, *, scope: Scope) -> tuple[Job, int]:
        """The job and its version (grows with every change to it or its items), one query."""
        with self.engine.connect().execution_options(**self.one_read) as conn:
            found = self.read_by_ids(conn, [job_id], scope)
        if not found:
            raise NotFound(f"job {job_id} not found")
        return found[0]

    def get_jobs_versioned(self, job_ids: Sequence[str], *,
                           scope: Scope) -> list[tuple[Job, int]]:
        """Jobs with their versions in the order asked; unknown ids, and other owners' jobs,
        are left out."""
        with self.engine.connect().execution_options(**self.one_read) as conn:
            found = self.read_by_ids(conn, list(job_ids), scope)
        by_id = {j.id: (j, v) for j, v in found}
        return [by_id[i] for i in job_ids if i in by_id]

    @property
    def polls_at_once(self) -> bool:
        """Are `poll_jobs` made on the caller's thread (a SQLite file: a status connection of
        its own that never waits for a lock), not in a thread of their own?"""
        return self.status_engine is not self.engine and self.status_engine.dialect.name == "sqlite"

    @property
    def polls_on_loop(self) -> bool:
        """Are the API's status reads made on its event loop by `poll_jobs_on_loop`
        (PostgreSQL through psycopg)?"""
        dialect = self.engine.dialect
        return dialect.name == "postgresql" and dialect.driver == "psycopg"

    async def poll_jobs_on_loop(self, job_ids: Sequence[str]) -> list[tuple[Job, int]]:
        """`get_jobs_versioned` of every owner's jobs, for the API's status reads on a
        server database, on the caller's event loop (`server_polls`)."""
        return await self._server_polls.poll(job_ids)

    @functools.cached_property
    def _server_polls(self) -> ServerPolls:
        from imgq.store.repository.server_polls import ServerPolls  # psycopg: the fleet's

        return ServerPolls(self.engine)

    def close_polls(self) -> None:
        """Close the connections of `poll_jobs_on_loop`, if it made any."""
        if "_server_polls" in self.__dict__:
            self._server_polls.close()

    def poll_jobs(self, job_ids: Sequence[str]) -> list[tuple[Job, int]] | None:
        """`get_jobs_versioned` of every owner's jobs, for the API's status reads on a SQLite
        file (`imgq.api.job_reads`, one query at a time), on `status_engine`
        (`imgq.store.db.status_engine`): None when the database is locked (the read waits for
        nothing): read with `get_jobs_versioned` in a thread then. Its connections are not
        tested before use: a read on one found dropped is made again at once."""
        def read() -> list[tuple[Job, int]]:
            if len(job_ids) == 1:  # a poller's read: its statement compiled once, no Core
                return versioned(read_rows(self.status_engine, prepared(
                    JOB_BY_ID_WITH_ITEMS, self.status_engine.dialect), {"id": job_ids[0]}))
            with self.status_engine.connect().execution_options(**self.one_read) as conn:
                return self.read_by_ids(conn, list(job_ids), SYSTEM)

        try:
            return again_if_dropped(read)
        except OperationalError as exc:
            if self.polls_at_once and is_locked(exc):
                return None
            raise

    def get_jobs(self, job_ids: Sequence[str], *, scope: Scope) -> list[Job]:
        """Jobs in the order asked; unknown ids, and other owners' jobs, are left out."""
        return [job for job, _ in self.get_jobs_versioned(job_ids, scope=scope)]

    def list_jobs(self, limit: int, offset: int = 0, *, scope: Scope) -> tuple[list[Job], int]:
        """A page of the jobs the scope lists (its owner's; all for admins), newest first,
        and their total count."""
        mine = visible(scope, by_id=False)
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(jobs).where(*mine)).scalar_one()
            ids = conn.execute(
                select(jobs.c.id).where(*mine).order_by(jobs.c.created_at.desc(), jobs.c.id)
                .limit(limit).offset(offset)
            ).scalars().all()
            found = self.load_jobs(conn, jobs.c.id.in_(ids))
        found.sort(key=lambda j: (j.created_at, j.id), reverse=True)
        return found, total

    def get_job_item(self, job_id: str, index: int, *, scope: Scope) -> tuple[bool, Item | None]:
        """One item of a job by its index, as a download or a preview needs it, in one query
        that reads neither the job's other items nor its JSON columns: whether the job's
        files were removed, and the item (None when the job has no such item)."""
        statement, params = _item_of_job_query(job_id, index, scope)
        if self.engine.dialect.name == "sqlite":  # one download each: no Core work per read
            row = read_row(self.engine, prepared(statement, self.engine.dialect), params)
        else:
            with self.engine.connect().execution_options(**self.one_read) as conn:
                row = conn.execute(statement, params).first()
        return _job_item(job_id, row)

    def poll_job_item(self, job_id: str, index: int, *,
                      scope: Scope) -> tuple[bool, Item | None] | None:
        """`get_job_item` on the caller's thread, for a download made on the API's event loop
        where `polls_at_once` (a SQLite file): on the status connection, which never waits
        for a lock; None when the database is locked (read with `get_job_item` in a thread
        then)."""
        statement, params = _item_of_job_query(job_id, index, scope)
        try:
            row = read_row(self.status_engine, prepared(statement, self.status_engine.dialect),
                           params)
        except OperationalError as exc:
            if is_locked(exc):
                return None
            raise
        return _job_item(job_id, row)

    async def poll_job_item_on_loop(self, job_id: str, index: int, *,
                                    scope: Scope) -> tuple[bool, Item | None]:
        """`get_job_item` on the caller's event loop where `polls_on_loop` (PostgreSQL through
        psycopg), as the status reads: a download answered with no hand-off to a thread."""
        statement, params = _item_of_job_query(job_id, index, scope)
        return _job_item(job_id, await self._server_polls.first(statement, params))

    def get_item(self, item_id: str) -> Item:
        """An item by its id, for imgq's own processes (clients name items by job and index)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(items).where(items.c.id == item_id)).first()
        if row is None:
            raise NotFound(f"item {item_id} not found")
        return item_from_row(row)

    def cancel_job(self, job_id: str, *, scope: Scope) -> Job:
        """Queued items never run; running ones stop at their next step; finished ones stay."""
        with self._write() as conn:
            found = conn.execute(
                update(jobs).where(jobs.c.id == job_id, *visible(scope))
                .values(cancel_requested=True)
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
        return self.get_job(job_id, scope=scope)

    def delete_job(self, job_id: str, *, scope: Scope) -> list[str]:
        """Remove a job and its items; return the blob keys to delete."""
        with self._write() as conn:
            if conn.execute(select(jobs.c.id).where(jobs.c.id == job_id, *visible(scope))
                            ).first() is None:
                raise NotFound(f"job {job_id} not found")
            keys = self.keys_of_jobs(conn, [job_id])
            conn.execute(delete(items).where(items.c.job_id == job_id))
            conn.execute(delete(jobs).where(jobs.c.id == job_id))
        return keys

    def blob_keys(self, job_id: str) -> list[str]:
        """For the sweeper: every file a job has."""
        with self.engine.connect() as conn:
            return self.keys_of_jobs(conn, [job_id])
