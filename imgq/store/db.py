"""Engine creation and migrations."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(url: str, pool_size: int | None = None, max_overflow: int | None = None,
                pre_ping: bool = True, **kwargs: Any) -> Engine:
    """`pre_ping`: on a server database, test each pooled connection with a round trip before
    use (what an API's reads need: a connection cut since its last use is replaced, unseen).
    An item worker passes False: it uses its connections every few milliseconds, and its
    claims and writes already come again after a dropped connection (`ClaimStore`)."""
    if url.startswith("sqlite"):
        db_path = url.split("///", 1)[-1]
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        # Keep enough connections for the API's reading threads: opening a SQLite connection
        # (and its pragmas) per read costs more than the read.
        kwargs.setdefault("pool_size", 20)
        kwargs.setdefault("max_overflow", 20)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if pool_size is not None:  # a server database: each process keeps its own pool
        kwargs.setdefault("pool_size", pool_size)
    if max_overflow is not None:
        kwargs.setdefault("max_overflow", max_overflow)
    return create_engine(url, pool_pre_ping=pre_ping, **kwargs)


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


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # let the "begin" listener above issue BEGIN
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (safe to call at every start)."""
    command.upgrade(alembic_config(engine), "head")
