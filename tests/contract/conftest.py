from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg import pq
from sqlalchemy import Engine, event

from imgq.domain.models import Item, Job
from imgq.domain.status import Status
from imgq.store import tables
from imgq.store.db import make_engine, migrate
from imgq.store.repository import Repository, utcnow


@pytest.fixture(params=["sqlite", "postgres"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repository]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    with fresh_repository(url) as repository:
        yield repository


@contextmanager
def fresh_repository(url: str, **engine_options: Any) -> Iterator[Repository]:
    """A repository on the database at `url`, migrated, its tables empty."""
    engine = make_engine(url, **engine_options)
    migrate(engine)
    empty_tables(engine)
    try:
        yield Repository(engine)
    finally:
        engine.dispose()


class LibpqTrace:
    """libpq's trace of the messages a client sends, to count its round trips: every connection
    `engine` makes from here on is traced (dispose the engine's pool first), and any other
    connection given to `follow`."""

    def __init__(self, engine: Engine, path: Path) -> None:
        self.file = path.open("w")
        event.listen(engine, "connect", lambda dbapi_conn, _record: self.follow(dbapi_conn.pgconn))

    def follow(self, pgconn: Any) -> None:
        pgconn.trace(self.file.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)

    def mark(self) -> int:
        self.file.flush()
        return self.file.tell()

    def since(self, mark: int) -> int:
        """The statements sent since `mark` (each ends with a Sync, or is a simple Query)."""
        self.file.flush()
        with open(self.file.name) as sent:
            sent.seek(mark)
            return sum(1 for line in sent if line.startswith("F\t")
                       and line.split("\t")[2].split()[0] in ("Sync", "Query"))

    def round_trips(self, action: Callable[[], Any]) -> int:
        mark = self.mark()
        action()
        return self.since(mark)

    def close(self) -> None:
        self.file.close()


def empty_tables(engine: Engine) -> None:
    """The PostgreSQL schema lives for the session: a test that claims "the next item" starts
    from empty tables, whatever an earlier test left queued."""
    with engine.begin() as conn:
        conn.execute(tables.items.delete())
        conn.execute(tables.jobs.delete())


def make_job(n_items: int = 2, ttl: float = 3600, created_offset: float = 0) -> Job:
    now = utcnow() + timedelta(seconds=created_offset)
    job_id = str(uuid.uuid4())
    items = [
        Item(id=str(uuid.uuid4()), job_id=job_id, idx=i, status=Status.queued,
             input_name=f"in{i}.png", input_key=f"{job_id}/inputs/{i}.png",
             input_meta={"format": "png", "width": 4, "height": 4, "bytes": 10}, queued_at=now)
        for i in range(n_items)
    ]
    return Job(id=job_id, created_at=now, expires_at=now + timedelta(seconds=ttl),
               pipeline=[{"op": "grayscale"}], resource="cpu", item_count=n_items, items=items)
