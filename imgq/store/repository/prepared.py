"""A worker's hottest statements, run on the driver's connection.

A small item's claim and end take SQLite a few tens of microseconds; through SQLAlchemy Core
(a pooled connection checked out and returned, its events, its per-execution parameter and
result processing) each write transaction cost the worker about ten times that. Here the same
Core statements are compiled once per process, run on a pooled connection's driver connection
with the binds' own type conversions, and their rows read by position (`base.raw_items`).
`sqlite3` keeps each statement prepared on its connection (its statement cache), so an item's
statements are parsed once per connection, not per item; psycopg prepares a statement on the
server once it has run a few times on a connection (its `prepare_threshold`), so PostgreSQL
parses and plans it once too.

On PostgreSQL each statement runs alone in autocommit (`autocommit_connection`): one round
trip, no BEGIN and COMMIT, as the worker's statements are each atomic by themselves.

Errors come out as SQLAlchemy's (`DBAPIError` and its subclasses), as through Core, so the
worker's classification of a locked or unreachable database is the same on both paths; a
connection that turned out cut is invalidated with the pool's older ones, as Core does, and
the error says so (`connection_invalidated`), so that the statement is made again.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import Engine
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

_REQUIRED = object()


class Prepared:
    """A Core statement compiled once for a dialect: its parameters positional (SQLite's `?`)
    or named (psycopg's `%(name)s`), as the dialect writes them."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self.sql = compiled.string
        self._named = not compiled.positional
        self._slots: list[tuple[str, Callable[[Any], Any] | None, Any]] = []
        for name in (compiled.binds if self._named else compiled.positiontup or ()):
            bind = compiled.binds[name]
            if bind.callable is not None or bind.expanding:
                raise ValueError(f"{name}: a parameter computed at execution cannot be prepared")
            processor = bind.type._cached_bind_processor(dialect)  # what Core itself applies
            self._slots.append((name, processor, _REQUIRED if bind.required else bind.value))

    def params(self, values: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        out = []
        for name, processor, default in self._slots:
            value = values.get(name, default)
            if value is _REQUIRED:
                raise KeyError(f"no value for the parameter {name!r}")
            out.append(processor(value) if processor is not None else value)
        if self._named:
            return dict(zip((slot[0] for slot in self._slots), out))
        return tuple(out)

    def run(self, conn: Any, values: dict[str, Any]) -> Any:
        """The statement run on a driver connection (`sqlite3`'s or psycopg's): its cursor."""
        return conn.execute(self.sql, self.params(values))


@functools.lru_cache(maxsize=64)
def prepared(statement: ClauseElement, dialect: Dialect) -> Prepared:
    """`statement` (built once, at import) compiled once for `dialect`."""
    return Prepared(statement, dialect)


def _checkout(engine: Engine) -> Any:
    """A pooled connection. The pool connects outside SQLAlchemy's error handling, so a
    failure to connect (a server down, a new SQLite connection's pragmas finding the database
    locked) is raised here as Core raises it: SQLAlchemy's error, marked as a cut connection
    where the dialect says so. The worker then tells an unreachable database from a bad
    image, as on every other path."""
    dbapi = engine.dialect.loaded_dbapi
    try:
        return engine.raw_connection()
    except dbapi.Error as exc:
        cut = engine.dialect.is_disconnect(exc, None, None)
        raise DBAPIError.instance(None, None, exc, dbapi.Error,
                                  connection_invalidated=cut) from exc


@contextmanager
def _driver_connection(engine: Engine) -> Iterator[sqlite3.Connection]:
    """A pooled connection's `sqlite3` connection, back to the pool after; sqlite3's errors
    are raised as SQLAlchemy's."""
    pooled = _checkout(engine)
    try:
        yield pooled.driver_connection
    except sqlite3.Error as exc:
        raise DBAPIError.instance(None, None, exc, sqlite3.Error) from exc
    finally:
        pooled.close()


@contextmanager
def write_transaction(engine: Engine) -> Iterator[sqlite3.Connection]:
    """A write transaction on a pooled connection's driver connection: BEGIN IMMEDIATE (the
    write lock first, as `imgq.store.db` does for Core writes), COMMIT, or ROLLBACK on any
    error. sqlite3's errors are raised as SQLAlchemy's."""
    with _driver_connection(engine) as conn:
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise


def read_row(engine: Engine, statement: Prepared, values: dict[str, Any]
             ) -> tuple[Any, ...] | None:
    """The first row of a one-SELECT read on a pooled connection's driver connection (no
    transaction of its own: the statement reads one snapshot by itself), as the driver gives
    it; sqlite3's errors are raised as SQLAlchemy's."""
    with _driver_connection(engine) as conn:
        row: tuple[Any, ...] | None = statement.run(conn, values).fetchone()
        return row


def read_rows(engine: Engine, statement: Prepared, values: dict[str, Any]
              ) -> list[tuple[Any, ...]]:
    """Every row of a one-SELECT read, as `read_row`."""
    with _driver_connection(engine) as conn:
        rows: list[tuple[Any, ...]] = statement.run(conn, values).fetchall()
        return rows


@contextmanager
def autocommit_connection(engine: Engine) -> Iterator[Any]:
    """A pooled connection's driver connection on a server database (psycopg), each statement
    committed by itself; back to the pool after, as it was. The driver's errors are raised as
    SQLAlchemy's, a failure to connect too; one that says the connection was cut invalidates
    it and the pool's older connections (as Core does), and is raised with
    `connection_invalidated` set."""
    pooled = _checkout(engine)
    conn: Any = pooled.driver_connection
    dbapi = engine.dialect.loaded_dbapi
    cut = False
    try:
        conn.autocommit = True
        yield conn
    except dbapi.Error as exc:
        cut = engine.dialect.is_disconnect(exc, pooled, None)
        if cut:
            engine.pool._invalidate(pooled, exc)
        raise DBAPIError.instance(None, None, exc, dbapi.Error,
                                  connection_invalidated=cut) from exc
    finally:
        if not cut and not conn.closed:
            conn.autocommit = False
        pooled.close()
