"""An item worker's claims and ends on SQLite: the statements each item costs, and errors as
through SQLAlchemy Core (`imgq.store.repository.prepared`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.exc import IntegrityError

from imgq.domain.access import SYSTEM
from imgq.domain.status import Status
from imgq.store.db import make_engine, migrate
from imgq.store.repository import Repository, succeeded
from imgq.store.repository.prepared import write_transaction
from tests.contract.conftest import make_job


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'test.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


def _run_queue(repo: Repository) -> int:
    """What a worker's drain does with the database: claim, then each end with the next claim."""
    claim, done = repo.claim_next("cpu", 30), 0
    while claim is not None:
        refused, claim = repo.finish_and_claim(
            succeeded(claim, f"k{done}", "r.png", {"format": "png"}, 0.01), "cpu", 30)
        assert refused is None
        done += 1
    return done


def test_a_small_items_claim_and_end_are_four_statements_on_the_driver(engine: Engine) -> None:
    """BEGIN IMMEDIATE, the end, the next claim, COMMIT; the job's row once per job; nothing
    executed through SQLAlchemy (its per-execution work cost more than SQLite's)."""
    repo = Repository(engine)
    jobs = [make_job(5), make_job(5)]
    for job in jobs:
        repo.create_job(job)
    statements: list[str] = []
    through_core: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def core(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        through_core.append(sql)

    with engine.connect() as conn:  # the pool's connections (SQLite keeps them): all traced
        conn.connection.driver_connection.set_trace_callback(  # type: ignore[union-attr]
            statements.append)
    assert engine.pool.checkedin() == 1
    assert _run_queue(repo) == 10
    # the first claim (BEGIN, UPDATE, COMMIT), then per item its end with the next claim (the
    # last finds nothing), and each job's row once
    assert len(statements) == 3 + 10 * 4 + len(jobs), statements
    assert [s.split()[0] for s in statements[:5]] == ["BEGIN", "UPDATE", "SELECT", "COMMIT",
                                                      "BEGIN"]
    assert through_core == []
    assert all(i.status == Status.succeeded for job in jobs
               for i in repo.get_job(job.id, scope=SYSTEM).items)


def test_a_failed_write_rolls_back_and_raises_sqlalchemys_error(engine: Engine) -> None:
    repo = Repository(engine)
    job = make_job(1)
    repo.create_job(job)
    with pytest.raises(IntegrityError) as raised:
        with write_transaction(engine) as conn:
            conn.execute("UPDATE items SET stage = 'changed'")
            conn.execute("INSERT INTO items (id) VALUES (?)", (job.items[0].id,))
    assert isinstance(raised.value.orig, sqlite3.IntegrityError)
    assert repo.get_job(job.id, scope=SYSTEM).items[0].stage != "changed"
    with write_transaction(engine) as conn:  # the connection went back to the pool usable
        assert not conn.execute("SELECT count(*) FROM items WHERE stage = 'changed'"
                                ).fetchone()[0]
