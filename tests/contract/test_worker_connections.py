"""An item worker's database connections, and the API's status reads, on PostgreSQL: no round
trip to test a connection before each use, and a claim, a finish or a read that meets a cut
connection is made again on a fresh one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from imgq.domain.access import SYSTEM
from imgq.store.db import make_engine, migrate
from imgq.store.repository import Repository, succeeded
from tests.contract.conftest import LibpqTrace, empty_tables, make_job


def test_an_item_workers_claims_and_finishes_go_on_across_cut_connections(
    postgres_url: str,
) -> None:
    """An item worker's engine tests no connection before use (no round trip per claim): a
    claim or a finish on a connection the server has cut is made again on a fresh one."""
    name = "imgq-test-cut"
    engine = make_engine(postgres_url, pool_size=2, pre_ping=False,
                         connect_args={"application_name": name})
    migrate(engine)
    empty_tables(engine)
    repo = Repository(engine)
    admin = make_engine(postgres_url)

    def cut() -> None:  # every connection the worker's pool keeps
        with admin.connect() as conn, conn.begin():
            assert conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name"), {"name": name}).scalar()

    try:
        job = make_job(3)
        repo.create_job(job)
        claim = repo.claim_next("cpu", 30)
        assert claim is not None
        cut()
        refused, claim = repo.finish_and_claim(
            succeeded(claim, "k0", "r.png", {}, 0.1), "cpu", 30)
        assert refused is None and claim is not None
        cut()
        refused, _ = repo.finish_and_claim(succeeded(claim, "k1", "r.png", {}, 0.1), None, 30)
        assert refused is None
        cut()
        assert repo.claim_next("cpu", 30) is not None
        statuses = sorted(i.status.value for i in repo.get_job(job.id, scope=SYSTEM).items)
        assert statuses == ["running", "succeeded", "succeeded"]
    finally:
        engine.dispose()
        admin.dispose()


def test_status_reads_on_the_event_loop_go_on_across_cut_connections(postgres_url: str) -> None:
    """The API's status reads keep a connection of their own on the event loop that nothing
    tests before use: a read on a connection the server has cut meets it by its own query
    and is made again, at once, on a fresh one; several jobs are read by one query."""
    name = "imgq-test-polls"
    url = f"{postgres_url}&application_name={name}"
    engine = make_engine(url)
    migrate(engine)
    repo = Repository(engine)
    admin = make_engine(postgres_url)
    jobs = [make_job(2), make_job(3)]
    for job in jobs:
        repo.create_job(job)

    def cut() -> int:  # every connection of the reads (and of the engine)
        with admin.connect() as conn, conn.begin():
            return int(conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name"), {"name": name}).scalar() or 0)

    async def reads() -> list[list[tuple[str, int]]]:
        seen = []
        for _ in range(3):
            found = await repo.poll_jobs_on_loop([jobs[0].id])
            seen.append([(job.id, len(job.items)) for job, _ in found])
            assert cut() >= 1
        both = await repo.poll_jobs_on_loop([j.id for j in jobs])
        seen.append(sorted((job.id, len(job.items)) for job, _ in both))
        return seen

    try:
        assert repo.polls_on_loop
        seen = asyncio.run(reads())
        assert seen == [[(jobs[0].id, 2)]] * 3 + [sorted([(jobs[0].id, 2), (jobs[1].id, 3)])]
    finally:
        repo.close_polls()
        empty_tables(engine)  # the schema lives for the session: leave it empty
        engine.dispose()
        admin.dispose()


def test_a_status_read_with_the_database_unreachable_raises_the_engines_error(
    postgres_url: str,
) -> None:
    """What the API answers with a 503, as for every other query (imgq.api.failures)."""
    url = make_engine(postgres_url).url.set(port=1)  # nothing listens there
    repo = Repository(make_engine(url.render_as_string(hide_password=False)))
    try:
        with pytest.raises(OperationalError):
            asyncio.run(repo.poll_jobs_on_loop([make_job(1).id]))
    finally:
        repo.close_polls()
        repo.engine.dispose()


def test_an_item_workers_claims_and_ends_are_one_round_trip_each_on_postgresql(
    postgres_url: str, tmp_path: Path,
) -> None:
    """What an item costs a worker in round trips to PostgreSQL, read from libpq's trace of
    the messages it sends: a claim alone, an item's end with the next claim, and the last end
    alone are one statement each, in autocommit (no BEGIN and COMMIT around them)."""
    engine = make_engine(postgres_url, pool_size=2, pre_ping=False)
    migrate(engine)
    empty_tables(engine)
    engine.dispose()  # connections made from here on are traced
    trace = LibpqTrace(engine, tmp_path / "libpq.trace")
    repo = Repository(engine)
    round_trips = trace.round_trips

    try:
        repo.create_job(make_job(4))
        claims = [repo.claim_next("cpu", 30)]  # the first use: the job's row is read too
        for n in range(2):  # each end and the next claim
            claim = claims[-1]
            assert claim is not None
            found: list[tuple[str | None, Any]] = []
            assert round_trips(lambda: found.append(repo.finish_and_claim(
                succeeded(claim, f"k{n}", "r.png", {}, 0.1), "cpu", 30))) == 1
            assert found[0][0] is None
            claims.append(found[0][1])
        last = claims[-1]
        assert last is not None
        assert round_trips(lambda: repo.finish_and_claim(
            succeeded(last, "k2", "r.png", {}, 0.1), None, 30)) == 1
        assert round_trips(lambda: claims.append(repo.claim_next("cpu", 30))) == 1
        assert claims[-1] is not None
    finally:
        trace.close()
        engine.dispose()


def test_an_item_workers_statements_with_the_database_unreachable_raise_the_engines_error(
    postgres_url: str,
) -> None:
    """The worker retries an unreachable database and blames no image for it
    (imgq.worker.execute): it must get SQLAlchemy's error, as through Core, not the driver's
    from the pool's connect."""
    url = make_engine(postgres_url).url.set(port=1)  # nothing listens there
    repo = Repository(make_engine(url.render_as_string(hide_password=False)))
    try:
        with pytest.raises(OperationalError):
            repo.claim_next("cpu", 30)
        with pytest.raises(OperationalError):
            repo.claim(make_job(1).items[0].id, 30)
    finally:
        repo.engine.dispose()
