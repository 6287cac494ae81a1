"""Engine creation and migrations."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(url: str, pool_size: int | None = None, max_overflow: int | None = None,
                pre_ping: bool = True, lock_wait_seconds: float = 30.0,
                **kwargs: Any) -> Engine:
    """`pre_ping`: on a server database, test each pooled connection with a round trip before
    use (what an API's reads need: a connection cut since its last use is replaced, unseen).
    An item worker passes False: it uses its connections every few milliseconds, and its
    claims and writes already come again after a dropped connection (`ClaimStore`).
    `lock_wait_seconds`: on SQLite, how long a statement waits for a lock before it fails as
    `database is locked`."""
    if url.startswith("sqlite"):
        db_path = url.split("///", 1)[-1]
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        # Keep enough connections for the API's reading threads: opening a SQLite connection
        # (and its pragmas) per read costs more than the read.
        kwargs.setdefault("pool_size", 20)
        kwargs.setdefault("max_overflow", 20)
        engine = create_engine(url, connect_args={"timeout": lock_wait_seconds}, **kwargs)
        event.listen(engine, "connect", functools.partial(
            _sqlite_pragmas, busy_ms=int(lock_wait_seconds * 1000)))
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if pool_size is not None:  # a server database: each process keeps its own pool
        kwargs.setdefault("pool_size", pool_size)
    if max_overflow is not None:
        kwargs.setdefault("max_overflow", max_overflow)
    return create_engine(url, pool_pre_ping=pre_ping, **kwargs)


def status_engine(url: str) -> Engine | None:
    """The connection of the API's status reads on a SQLite file, which read one query at a
    time (`imgq.api.job_reads`; more only where tests run several event loops at once). It
    never waits for a lock: the reads are made on the event loop's own thread (a hand-off
    to a thread and back cost more than the read: two wake-ups and two passes of the GIL,
    each waiting for a core on a busy machine), and one that finds the database locked is
    made in a thread instead. None for an in-memory database, and for a server database,
    where the reads have a connection of their own on the event loop
    (`imgq.store.repository.server_polls`)."""
    if not url.startswith("sqlite") or url.split("///", 1)[-1] in ("", ":memory:"):
        return None
    return make_engine(url, pool_size=1, max_overflow=4, lock_wait_seconds=0)


WRITE = {"imgq_write": True}
#: A read made of one SELECT needs no transaction of its own (the statement reads one
#: snapshot by itself): on SQLite no BEGIN, on PostgreSQL autocommit, which spares the BEGIN
#: and ROLLBACK round trips around every status read.
ONE_READ = {"imgq_one_read": True}
SERVER_ONE_READ = {"isolation_level": "AUTOCOMMIT"}


def one_read_options(engine: Engine) -> dict[str, Any]:
    # Not AUTOCOMMIT on SQLite: resetting it when the connection returns to the pool would
    # undo the driver setting that leaves BEGIN to `_sqlite_begin`.
    return ONE_READ if engine.dialect.name == "sqlite" else SERVER_ONE_READ


def _sqlite_begin(conn: Any) -> None:
    # Writers take the write lock at BEGIN (IMMEDIATE), so a transaction that reads before it
    # writes never fails to upgrade its lock under concurrency; readers BEGIN deferred and,
    # with WAL, read a snapshot without blocking anyone. Sent on the driver's connection: a
    # statement through SQLAlchemy costs a worker more than the BEGIN itself, once per item.
    options = conn.get_execution_options()
    if options.get("imgq_write"):
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE")
    elif not options.get("imgq_one_read"):
        conn.connection.driver_connection.execute("BEGIN")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any, busy_ms: int) -> None:
    dbapi_conn.isolation_level = None  # let the "begin" listener above issue BEGIN
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={busy_ms}")
    cur.close()


def alembic_config(engine: Engine) -> Config:
    # Alembic is imported here, by the process that migrates (the API server, `imgq migrate`),
    # not by every process that only opens the database: each worker process a server spawns
    # and each other `imgq` command is spared its import (0.2-0.3 s of CPU).
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (safe to call at every start)."""
    from alembic import command

    command.upgrade(alembic_config(engine), "head")
