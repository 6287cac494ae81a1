"""A claim on PostgreSQL reads the first due item of its queue from the queue-order index and
updates that row by its key: no sort of every queued item, no scan of them for the row, no
join to jobs, however long the queue (and whether or not the table's statistics are fresh: the
test database runs without autovacuum)."""

from __future__ import annotations

from datetime import timedelta

from imgq.store.db import make_engine, migrate
from imgq.store.repository import Repository, utcnow
from imgq.store.repository.claims import CLAIM_NEXT
from tests.contract.conftest import make_job


def test_a_claim_reads_the_next_item_in_index_order_without_sorting_the_queue(
    postgres_url: str,
) -> None:
    engine = make_engine(postgres_url)
    migrate(engine)
    repo = Repository(engine)
    try:
        for _ in range(5):
            repo.create_job(make_job(100))
        compiled = CLAIM_NEXT.compile(dialect=engine.dialect)
        now = utcnow()
        params = compiled.construct_params({"now": now, "token": "t", "queue": "cpu",
                                            "lease_until": now + timedelta(seconds=30)})
        with engine.connect() as conn:
            plan = "\n".join(row[0] for row in conn.exec_driver_sql(
                f"EXPLAIN {compiled}", params))
            conn.rollback()
        assert "ix_items_queue_order" in plan, plan
        assert "items_pkey" in plan, plan
        assert "Sort" not in plan, plan
        assert "jobs" not in plan, plan
        assert repo.claim_next("cpu", 30) is not None
    finally:
        engine.dispose()
