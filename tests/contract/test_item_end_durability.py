"""On PostgreSQL an item's state, once a client can read it, survives a crash of the database:
the worker's claims and item ends wait for their WAL flush like every other write. (Committing
them without it saves the server ~0.14 ms of CPU an item, but a crash then loses the last
ends: an item a client saw succeed, whose result it downloaded, would be running again.)

Each test crashes a PostgreSQL of its own (an immediate stop), whose WAL writer waits 10 s
between flushes, so that a commit that did not wait for its flush is surely lost."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from imgq.domain.access import SYSTEM
from imgq.store.repository import Repository, succeeded
from tests.contract.conftest import fresh_repository, make_job
from tests.fixtures.outages import OwnPostgres, own_postgres

LEASE = 30.0  # seconds
SLOW_WAL_WRITER = {"wal_writer_delay": "10000", "autovacuum": "off"}


@pytest.fixture(scope="module")
def db() -> Iterator[OwnPostgres]:
    with own_postgres(SLOW_WAL_WRITER) as server:
        yield server


@pytest.fixture
def repo(db: OwnPostgres) -> Iterator[Repository]:
    with fresh_repository(db.url, pool_size=2) as repository:
        yield repository


def crash(db: OwnPostgres) -> None:
    db.stop()  # immediate: what the WAL writer had not flushed is gone
    db.start()


def test_claims_and_ends_seen_by_a_client_survive_a_crash(
    db: OwnPostgres, repo: Repository,
) -> None:
    job = make_job(3)
    repo.create_job(job)
    first = repo.claim_next("cpu", LEASE)  # a claim alone
    assert first is not None
    refused, second = repo.finish_and_claim(  # an end with the next claim, one statement
        succeeded(first, "r-0", "r.png", {}, 0.1), "cpu", LEASE)
    assert refused is None and second is not None
    refused, third = repo.finish_and_claim(succeeded(second, "r-1", "r.png", {}, 0.1), "cpu",
                                           LEASE)
    assert refused is None and third is not None
    repo.finish(succeeded(third, "r-2", "r.png", {}, 0.1))  # a drain's last end, alone
    seen = {i.id: (i.status.value, i.result_key)
            for i in repo.get_job(job.id, scope=SYSTEM).items}
    assert seen == {first.item.id: ("succeeded", "r-0"), second.item.id: ("succeeded", "r-1"),
                    third.item.id: ("succeeded", "r-2")}

    crash(db)
    kept = {i.id: (i.status.value, i.result_key)
            for i in repo.get_job(job.id, scope=SYSTEM).items}
    assert kept == seen, "an item end a client could read was lost in the crash"


def test_a_running_items_claim_survives_a_crash(db: OwnPostgres, repo: Repository) -> None:
    job = make_job(1)
    repo.create_job(job)
    claim = repo.claim_next("cpu", LEASE)
    assert claim is not None
    crash(db)
    item = repo.get_item(claim.item.id)
    assert (item.status.value, item.claim_token) == ("running", claim.token)
    repo.finish(succeeded(claim, "k", "r.png", {}, 0.1))  # its worker's end is still taken
    assert repo.get_item(claim.item.id).status.value == "succeeded"


def test_the_crash_loses_a_commit_that_did_not_wait_for_its_flush(
    db: OwnPostgres, repo: Repository,
) -> None:
    """The fixture itself: a commit made without waiting for its flush, by hand, is lost in
    the crash, and one that waited is kept; so the tests above would see a lost end."""
    with repo.engine.begin() as conn:
        conn.execute(text("CREATE TABLE flushed (n int)"))
    with repo.engine.begin() as conn:
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        conn.execute(text("CREATE TABLE unflushed (n int)"))
    crash(db)
    with repo.engine.connect() as conn:
        assert conn.execute(text("SELECT to_regclass('flushed') IS NOT NULL, "
                                 "to_regclass('unflushed') IS NULL")).one() == (True, True)
