"""The API's status reads on PostgreSQL, made on the event loop (`imgq.api.job_reads`), its
downloads' item reads, and its submits' one statement (`job_rows`).

A read handed to a thread waited, on a busy machine, for that thread to get a core and the
GIL and then for the event loop to be woken again: traced under load, 1-2 ms of the thread's
own time for the query, 40-100 ms at p99 from the hand-off to the answer back on the loop
(bench/README.md, status reads). Here the query is sent on a psycopg `AsyncConnection` by
the event loop itself, which waits for the answer on the socket as it waits for its
clients: no thread to wake or to wait for (uploads and downloads may hold them all).

One connection per event loop (a server has one; tests run several), kept open and not
tested by a round trip before use: a read that meets a connection the server cut (a
restart, a failover, an idle timeout) is made once more at once, on a new connection. The
statements are the repository's own Core statements, compiled once; the connection is made
with the engine's connection arguments and type adapters, so rows come as the engine's
driver gives them (`base.versioned` reads them). Errors come out as SQLAlchemy's, as from
the rest of the repository: a database outage answers the same 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import psycopg
from sqlalchemy import ARRAY, Engine, String, any_, bindparam
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from imgq.domain.models import Job
from imgq.store.repository.base import JOB_BY_ID_WITH_ITEMS, JOBS_WITH_ITEMS, versioned
from imgq.store.repository.job_rows import JOB_EXISTS
from imgq.store.tables import jobs

#: Several jobs by id: one array parameter (an expanding IN list is written into the SQL
#: at each execution, and each length would be another statement to prepare).
_BY_ANY_ID = JOBS_WITH_ITEMS.where(jobs.c.id == any_(bindparam("ids", type_=ARRAY(String()))))


def _sql(statement: ClauseElement, engine: Engine, names: set[str]) -> str:
    compiled = cast(SQLCompiler, statement.compile(dialect=engine.dialect))
    if set(compiled.binds) != names:
        raise ValueError(f"{sorted(compiled.binds)}: parameters other than {sorted(names)}")
    return str(compiled)


class ServerPolls:
    def __init__(self, engine: Engine) -> None:
        self._connect_args = engine.dialect.create_connect_args(engine.url)
        self._one = _sql(JOB_BY_ID_WITH_ITEMS, engine, {"id"})
        self._many = _sql(_BY_ANY_ID, engine, {"ids"})
        self._connections: dict[asyncio.AbstractEventLoop, psycopg.AsyncConnection[Any]] = {}
        self._engine = engine
        self._other: dict[ClauseElement, str] = {}  # `first`'s statements, compiled

    async def poll(self, job_ids: Sequence[str]) -> list[tuple[Job, int]]:
        """Every owner's jobs of these ids with their versions (the order is the query's)."""
        sql, params = ((self._one, {"id": job_ids[0]}) if len(job_ids) == 1
                       else (self._many, {"ids": list(job_ids)}))
        return versioned(await self._read(sql, params))

    async def first(self, statement: ClauseElement, params: dict[str, Any]) -> Any:
        """The first row of another of the repository's reads (one statement built once, at
        import; its parameters bound as they are), as the driver gives it, or None: a
        download's item."""
        sql = self._other.get(statement)
        if sql is None:
            sql = self._other[statement] = _sql(statement, self._engine, set(params))
        rows = await self._read(sql, params)
        return rows[0] if rows else None

    async def create(self, sql: str, params: dict[str, Any], job_id: str) -> None:
        """Run a job's one creating statement (`job_rows.CREATE_JOB`). When the connection
        turns out cut, the statement may have been committed before the answer was lost: it
        is made again on a new connection only if the job is not there."""
        try:
            try:
                await self._rows(sql, params, fetch=False)
                return
            except psycopg.Error:
                if not self._dropped():
                    raise
            if not await self._rows(JOB_EXISTS, {"id": job_id}):
                await self._rows(sql, params, fetch=False)
        except psycopg.Error as exc:
            raise cast(DBAPIError, DBAPIError.instance(sql, params, exc, psycopg.Error)) from exc

    async def _read(self, sql: str, params: dict[str, Any]) -> list[Any]:
        try:
            try:
                return await self._rows(sql, params)
            except psycopg.Error:
                if not self._dropped():
                    raise
            return await self._rows(sql, params)  # on a new connection
        except psycopg.Error as exc:
            raise cast(DBAPIError, DBAPIError.instance(sql, params, exc, psycopg.Error)) from exc

    async def _rows(self, sql: str, params: dict[str, Any], fetch: bool = True) -> list[Any]:
        conn = await self._connection()
        try:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall() if fetch else []
        except psycopg.Error:
            raise
        except BaseException:  # cancelled mid-query: the connection's state is unknown
            self._forget(conn)
            raise

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        loop = asyncio.get_running_loop()
        conn = self._connections.get(loop)
        if conn is not None and not conn.closed:
            return conn
        for old in [c for gone, c in self._connections.items() if gone.is_closed()]:
            self._forget(old)  # the event loops of earlier tests
        args, kwargs = self._connect_args
        new = await psycopg.AsyncConnection.connect(*args, autocommit=True, **kwargs)
        conn = self._connections.get(loop)
        if conn is not None and not conn.closed:  # another read connected meanwhile
            new.pgconn.finish()
            return conn
        self._connections[loop] = new
        return new

    def _dropped(self) -> bool:
        """Was this loop's connection found cut (then forgotten: the next read makes one)?"""
        conn = self._connections.get(asyncio.get_running_loop())
        if conn is None or not (conn.broken or conn.closed):
            return False
        self._forget(conn)
        return True

    def _forget(self, conn: psycopg.AsyncConnection[Any]) -> None:
        for loop in [k for k, c in self._connections.items() if c is conn]:
            del self._connections[loop]
        conn.pgconn.finish()  # what AsyncConnection.close() does, callable from any thread

    def close(self) -> None:
        for conn in list(self._connections.values()):
            self._forget(conn)
