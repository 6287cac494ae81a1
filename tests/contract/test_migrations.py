from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from imgq.store.db import make_engine, migrate
from imgq.store.tables import metadata


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrations_build_exactly_the_tables_the_code_uses(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}" if backend == "sqlite" else request.getfixturevalue(
        "postgres_url")
    engine = make_engine(url)
    migrate(engine)
    migrate(engine)  # a second run at start-up is harmless
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


def test_the_image_queue_demos_stored_task_ids_survive_the_rename(tmp_path: Path) -> None:
    """Rows written before 0008 under the old internal label still lead to their jobs."""
    from alembic import command
    from sqlalchemy import text

    from imgq.store.db import alembic_config
    from imgq.domain.access import SYSTEM
    from imgq.store.repository import Repository
    from tests.contract.conftest import make_job

    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    job = make_job(1)
    Repository(engine).create_job(job)
    command.downgrade(alembic_config(engine), "0007")  # as a server of the release before
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO compat_tasks (id, system, job_id, filename, created_at) "
                          "VALUES (4294967297, 'seed002', :job, 'cat.png', '2026-01-01')"),
                     {"job": job.id})
    migrate(engine)
    found = Repository(engine).compat_task_job("queue_demo", task_id=4294967297, scope=SYSTEM)
    assert found == job.id
    engine.dispose()


def test_items_queued_before_0010_are_claimed_from_their_jobs_queue(tmp_path: Path) -> None:
    """The upgrade copies each job's resource class onto its items: a GPU job's items queued
    by the release before are claimed by GPU workers, not CPU ones."""
    from dataclasses import replace

    from alembic import command
    from sqlalchemy import insert

    from imgq.store.db import alembic_config
    from imgq.store.repository import Repository
    from imgq.store.tables import jobs
    from tests.contract.conftest import make_job

    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    command.downgrade(alembic_config(engine), "0009")  # as a server of the release before
    job = replace(make_job(2), resource="gpu")
    with engine.begin() as conn:  # the rows as that release wrote them (no resource column)
        conn.execute(insert(jobs), {f: getattr(job, f) for f in (
            "id", "created_at", "expires_at", "pipeline", "resource", "item_count")})
        for item in job.items:
            conn.exec_driver_sql(
                "INSERT INTO items (id, job_id, idx, status, progress, attempts, queued_at, "
                "input_name, input_key, input_meta) VALUES (?, ?, ?, 'queued', 0, 0, ?, ?, ?, "
                "'{}')", (item.id, job.id, item.idx,
                          item.queued_at.strftime("%Y-%m-%d %H:%M:%S.%f"), item.input_name,
                          item.input_key))
    migrate(engine)
    repo = Repository(engine)
    assert repo.claim_next("cpu", 30) is None
    claimed = {c.item.id for c in (repo.claim_next("gpu", 30), repo.claim_next("gpu", 30)) if c}
    assert claimed == {i.id for i in job.items}
    engine.dispose()
