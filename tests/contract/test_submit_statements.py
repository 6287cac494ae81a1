"""A submit's rows on PostgreSQL: the job, its items and their fair order in one statement, one
round trip in autocommit, from the API's thread (the pool) and from its event loop (the status
reads' connection); a connection that drops is met without a lost or doubled job."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import func, select, text

from imgq.domain.access import SYSTEM
from imgq.store.db import make_engine, migrate
from imgq.store.repository import Repository
from imgq.store.tables import items, jobs
from tests.contract.conftest import LibpqTrace, empty_tables, make_job


def _fair_keys(repo: Repository, job_id: str) -> list[int]:
    with repo.engine.connect() as conn:
        return list(conn.execute(select(items.c.fair_key).where(items.c.job_id == job_id)
                                 .order_by(items.c.idx)).scalars())


def test_a_submits_rows_are_one_round_trip_from_the_thread_and_from_the_event_loop(
    postgres_url: str, tmp_path: Path,
) -> None:
    """Through Core a submit was a ping, BEGIN, three statements and COMMIT; now the job, its
    items and their place in the fair order are one statement, and come out as Core wrote
    them: each owner's items after its own queued ones, others' from the queue's head."""
    engine = make_engine(postgres_url)  # the API's engine: it tests pooled connections
    migrate(engine)
    empty_tables(engine)
    engine.dispose()  # connections made from here on are traced
    trace = LibpqTrace(engine, tmp_path / "libpq.trace")
    repo = Repository(engine)
    first, second, other = make_job(3), make_job(2), make_job(2)
    first.owner = second.owner = "key:a"
    other.owner = "key:b"
    try:
        repo.create_job(make_job(1))  # the pool's first connection, made outside the count
        with engine.begin() as conn:
            conn.execute(items.update().values(status="succeeded"))  # not queued any more
        # The pool tests its connection first (pre-ping), then one statement.
        assert trace.round_trips(lambda: repo.create_job(first)) == 2

        async def on_loop() -> int:
            await repo.poll_jobs_on_loop([first.id])  # the loop's connection, made here
            conn = repo._server_polls._connections[asyncio.get_running_loop()]
            trace.follow(conn.pgconn)
            mark = trace.mark()
            await repo.create_job_on_loop(second)
            await repo.create_job_on_loop(other)
            return trace.since(mark)

        assert asyncio.run(on_loop()) == 2  # two jobs, a statement each
        assert _fair_keys(repo, first.id) == [0, 1, 2]
        assert _fair_keys(repo, second.id) == [3, 4]  # after its owner's own queued items
        assert _fair_keys(repo, other.id) == [0, 1]  # another owner: from the queue's head
        stored = repo.get_job(second.id, scope=SYSTEM)
        assert stored.owner == "key:a" and stored.pipeline == second.pipeline
        assert [(i.id, i.input_meta, i.queued_at, i.status) for i in stored.items] == [
            (i.id, i.input_meta, i.queued_at, i.status) for i in second.items]
    finally:
        repo.close_polls()
        trace.close()
        empty_tables(engine)
        engine.dispose()


def test_a_submit_whose_connection_was_cut_is_written_once(postgres_url: str) -> None:
    """A statement whose connection drops may have been committed before its answer was
    lost: the submit looks for its job on a fresh connection and writes it only when it is
    not there. A job written before the cut is neither written twice nor refused as a
    duplicate; a job not yet written is written."""
    name = "imgq-test-submit-cut"
    url = f"{postgres_url}&application_name={name}"
    engine = make_engine(url, pre_ping=False)  # else the pool's ping would meet the cut first
    migrate(engine)
    empty_tables(engine)
    repo = Repository(engine)
    admin = make_engine(postgres_url)

    def cut() -> None:
        with admin.connect() as conn, conn.begin():
            assert conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name"), {"name": name}).scalar()

    def counts() -> tuple[int, int]:
        with admin.connect() as conn:
            return (conn.execute(select(func.count()).select_from(jobs)).scalar_one(),
                    conn.execute(select(func.count()).select_from(items)).scalar_one())

    written, fresh = make_job(3), make_job(2)
    try:
        repo.create_job(written)
        cut()
        repo.create_job(written)  # as if its answer had been lost: no second job, no error
        cut()
        repo.create_job(fresh)
        assert counts() == (2, 5)

        async def on_loop() -> None:
            again, new = make_job(2), make_job(4)
            await repo.create_job_on_loop(again)
            cut()
            await repo.create_job_on_loop(again)
            cut()
            await repo.create_job_on_loop(new)

        asyncio.run(on_loop())
        assert counts() == (4, 11)
    finally:
        repo.close_polls()
        empty_tables(admin)
        engine.dispose()
        admin.dispose()
