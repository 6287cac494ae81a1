from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

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
