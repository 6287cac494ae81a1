"""An item worker's database connections on PostgreSQL: no round trip to test one before each
use, and a claim or finish that meets a cut connection is made again on a fresh one."""

from __future__ import annotations

from sqlalchemy import text

from imgq.domain.access import SYSTEM
from imgq.store.db import make_engine, migrate
from imgq.store.repository import Repository, succeeded
from tests.contract.conftest import make_job


def test_an_item_workers_claims_and_finishes_go_on_across_cut_connections(
    postgres_url: str,
) -> None:
    """An item worker's engine tests no connection before use (no round trip per claim): a
    claim or a finish on a connection the server has cut is made again on a fresh one."""
    name = "imgq-test-cut"
    engine = make_engine(postgres_url, pool_size=2, pre_ping=False,
                         connect_args={"application_name": name})
    migrate(engine)
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
