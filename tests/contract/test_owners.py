"""A job belongs to its owner: the repository filters every read and write on it, on SQLite
and PostgreSQL, so no route can forget to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from imgq.domain.access import SYSTEM, Scope, key_owner
from imgq.domain.models import Job
from imgq.domain.status import Status
from imgq.errors import NotFound
from imgq.store.repository import Repository
from imgq.store.tables import items
from tests.contract.conftest import make_job

ALICE = Scope(owner=key_owner("alice"))
BOB = Scope(owner=key_owner("bob"))
ADMIN = Scope(owner=key_owner("root"), sees_all=True)


def _owned(repo: Repository, owner: str | None, n_items: int = 1) -> Job:
    job = make_job(n_items)
    job.owner = owner
    repo.create_job(job)
    return job


def test_another_owners_job_is_not_found_by_any_read_or_write(repo: Repository) -> None:
    job = _owned(repo, ALICE.owner)
    calls: list[Callable[[], Any]] = [
        lambda: repo.get_job(job.id, scope=BOB),
        lambda: repo.cancel_job(job.id, scope=BOB),
        lambda: repo.delete_job(job.id, scope=BOB),
    ]
    for call in calls:
        with pytest.raises(NotFound):
            call()
    assert repo.get_jobs([job.id], scope=BOB) == []
    assert repo.job_version(job.id, scope=BOB) is None
    assert repo.job_snapshot(job.id, scope=BOB) is None
    mine = repo.get_job(job.id, scope=ALICE)  # nothing was cancelled or deleted by Bob
    assert not mine.cancel_requested and mine.owner == ALICE.owner
    assert repo.job_version(job.id, scope=ALICE) is not None


def test_lists_show_only_the_callers_jobs_and_admins_see_all(repo: Repository) -> None:
    alices = [_owned(repo, ALICE.owner) for _ in range(2)]
    bobs = _owned(repo, BOB.owner)
    legacy = _owned(repo, None)  # made before owners existed
    page, total = repo.list_jobs(10, scope=ALICE)
    assert total == 2 and {j.id for j in page} == {j.id for j in alices}
    page, total = repo.list_jobs(10, scope=ADMIN)
    assert total == 4 and {j.id for j in page} == {*(j.id for j in alices), bobs.id, legacy.id}
    assert repo.list_jobs(10, scope=Scope(owner=None)) == ([], 0)


def test_an_admin_cancels_and_deletes_anyones_job(repo: Repository) -> None:
    job = _owned(repo, ALICE.owner, n_items=2)
    assert repo.cancel_job(job.id, scope=ADMIN).cancel_requested
    assert sorted(repo.delete_job(job.id, scope=ADMIN)) == sorted(i.input_key for i in job.items)
    with pytest.raises(NotFound):
        repo.get_job(job.id, scope=SYSTEM)


def test_in_the_keyless_mode_an_id_opens_a_job_but_lists_stay_the_callers(
        repo: Repository) -> None:
    here = Scope(owner="anon:10.0.0.1", ids_open=True)
    there = Scope(owner="anon:10.0.0.2", ids_open=True)
    job = _owned(repo, here.owner)
    assert repo.get_job(job.id, scope=there).id == job.id
    assert repo.list_jobs(10, scope=there) == ([], 0)
    assert [j.id for j in repo.list_jobs(10, scope=here)[0]] == [job.id]


def test_items_carry_their_jobs_owner(repo: Repository) -> None:
    job = _owned(repo, ALICE.owner, n_items=3)
    with repo.engine.connect() as conn:
        owners = conn.execute(select(items.c.owner).where(items.c.job_id == job.id)).scalars()
        assert set(owners) == {ALICE.owner}


def test_an_older_apis_task_is_found_by_file_name_only_by_its_owner(repo: Repository) -> None:
    job = _owned(repo, ALICE.owner)
    repo.add_compat_task(424242, "queue", job.id, "cat.png")
    assert repo.compat_task_job("queue", filename="cat.png", scope=ALICE) == job.id
    assert repo.compat_task_job("queue", filename="cat.png", scope=BOB) is None
    assert repo.compat_task_job("queue", 424242, scope=BOB) is None
    assert repo.compat_task_exists("queue", 424242)


def test_one_item_of_a_job_is_read_by_index_within_the_callers_scope(repo: Repository) -> None:
    job = _owned(repo, ALICE.owner, n_items=3)
    removed, item = repo.get_job_item(job.id, 2, scope=ALICE)
    assert not removed and item is not None
    assert (item.id, item.idx, item.status) == (job.items[2].id, 2, Status.queued)
    assert item.input_meta["format"] == "png"
    assert repo.get_job_item(job.id, 3, scope=ALICE) == (False, None)  # no such item
    with pytest.raises(NotFound):
        repo.get_job_item(job.id, 0, scope=BOB)
    with pytest.raises(NotFound):
        repo.get_job_item("missing", 0, scope=ADMIN)
    repo.mark_expired(job.id)
    removed, item = repo.get_job_item(job.id, 0, scope=ADMIN)
    assert removed and item is not None and item.id == job.items[0].id
