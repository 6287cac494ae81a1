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
