"""The repository's contract, run against SQLite and PostgreSQL."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from imgq.domain.access import SYSTEM
from imgq.domain.status import JobStatus, Status
from imgq.errors import InvalidTransition, NotFound
from imgq.store.repository import Repository, failed, succeeded
from tests.contract.conftest import make_job


def test_a_created_job_reads_back_with_its_items_in_order(repo: Repository) -> None:
    job = make_job(3)
    job.extra = {"attachments": {"style.png": {"key": "k", "width": 4}}, "note": "é"}
    repo.create_job(job)
    got = repo.get_job(job.id, scope=SYSTEM)
    assert (got.pipeline, got.extra) == (job.pipeline, job.extra)  # JSON columns, once per job
    assert [i.id for i in got.items] == [i.id for i in job.items]
    assert got.status == JobStatus.queued
    assert got.items[0].input_meta["format"] == "png"
    assert got.created_at.tzinfo is not None
    assert abs((got.created_at - job.created_at).total_seconds()) < 0.001


def test_unknown_job_is_not_found(repo: Repository) -> None:
    with pytest.raises(NotFound):
        repo.get_job("nope", scope=SYSTEM)


def test_jobs_list_newest_first_with_total(repo: Repository) -> None:
    jobs = [make_job(1, created_offset=i) for i in range(5)]
    for job in jobs:
        repo.create_job(job)
    page, total = repo.list_jobs(limit=2, offset=1, scope=SYSTEM)
    assert total == 5
    assert [j.id for j in page] == [jobs[3].id, jobs[2].id]


def test_get_jobs_keeps_the_order_asked_and_skips_unknown(repo: Repository) -> None:
    a, b = make_job(1), make_job(1)
    repo.create_job(a)
    repo.create_job(b)
    assert [j.id for j in repo.get_jobs([b.id, "missing", a.id], scope=SYSTEM)] == [b.id, a.id]


def test_an_item_is_claimed_once_even_when_raced(repo: Repository) -> None:
    job = make_job(1)
    repo.create_job(job)
    item_id = job.items[0].id
    with ThreadPoolExecutor(8) as pool:
        claims = list(pool.map(lambda _: repo.claim(item_id, 30), range(8)))
    won = [c for c in claims if c is not None]
    assert len(won) == 1
    assert won[0].item.status == Status.running and won[0].item.attempts == 1


def test_finishing_moves_running_to_succeeded_with_metadata(repo: Repository) -> None:
    job = make_job(1)
    repo.create_job(job)
    claim = repo.claim(job.items[0].id, 30)
    assert claim is not None
    repo.finish_succeeded(claim, "k/result.png", "in0.png", {"format": "png", "width": 2,
                                                              "height": 2, "bytes": 5}, 0.5)
    item = repo.get_item(claim.item.id)
    assert (item.status, item.progress, item.result_key) == (Status.succeeded, 100, "k/result.png")
    assert item.finished_at is not None and item.processing_seconds == 0.5


def test_a_stale_claim_can_change_nothing(repo: Repository) -> None:
    job = make_job(1)
    repo.create_job(job)
    first = repo.claim(job.items[0].id, -1)  # a lease that has already run out
    assert first is not None
    assert repo.requeue_lost(max_losses=3) == ([first.item.id], [])
    second = repo.claim(first.item.id, 30)
    assert second is not None and second.item.attempts == 2
    with pytest.raises(InvalidTransition, match="another worker"):
        repo.finish_succeeded(first, "k", "n", {}, 1.0)
    assert not repo.heartbeat(first, 30).owned
    repo.finish_failed(second, "decode_error", "bad")
    assert repo.get_item(first.item.id).status == Status.failed


def test_a_finished_item_refuses_another_finish(repo: Repository) -> None:
    job = make_job(1)
    repo.create_job(job)
    claim = repo.claim(job.items[0].id, 30)
    assert claim is not None
    repo.finish_failed(claim, "decode_error", "cannot decode")
    with pytest.raises(InvalidTransition, match="failed"):
        repo.finish_succeeded(claim, "k", "n", {}, 1.0)


def test_cancelled_item_is_never_claimed(repo: Repository) -> None:
    job = make_job(2)
    repo.create_job(job)
    running = repo.claim(job.items[0].id, 30)
    assert running is not None
    cancelled = repo.cancel_job(job.id, scope=SYSTEM)
    assert [i.status for i in cancelled.items] == [Status.running, Status.cancelled]
    assert repo.claim(job.items[1].id, 30) is None
    assert repo.heartbeat(running, 30).cancel_requested
    repo.finish_cancelled(running)
    assert repo.get_job(job.id, scope=SYSTEM).status == JobStatus.cancelled


def test_retry_later_is_not_due_until_its_time(repo: Repository) -> None:
    job = make_job(1)
    repo.create_job(job)
    claim = repo.claim(job.items[0].id, 30)
    assert claim is not None
    repo.retry_later(claim, 0.3, "transient_error", "try again")
    assert repo.due_items() == []
    assert repo.claim(claim.item.id, 30) is None
    time.sleep(0.35)
    assert repo.due_items() == [(claim.item.id, "cpu")]
    again = repo.claim(claim.item.id, 30)
    assert again is not None and again.item.attempts == 2


def test_lost_items_out_of_attempts_fail_with_a_reason(repo: Repository) -> None:
    job = make_job(1)
    repo.create_job(job)
    claim = repo.claim(job.items[0].id, -1)  # a lease that has already run out
    assert claim is not None
    assert repo.requeue_lost(max_losses=1) == ([], [claim.item.id])
    item = repo.get_item(claim.item.id)
    assert item.status == Status.failed and item.error_code == "worker_lost"


def test_a_lost_lease_spends_no_attempt_of_the_image(repo: Repository) -> None:
    job = make_job(1)
    repo.create_job(job)
    for losses in (1, 2):
        claim = repo.claim(job.items[0].id, -1)  # a lease that has already run out
        assert claim is not None
        assert repo.requeue_lost(max_losses=3) == ([claim.item.id], [])
        item = repo.get_item(claim.item.id)
        assert (item.status, item.lease_losses, item.failures) == (Status.queued, losses, 0)
    claim = repo.claim(job.items[0].id, 30)
    assert claim is not None
    repo.retry_later(claim, 0.0, "database_unavailable", "down", spend=False)
    assert repo.get_item(claim.item.id).failures == 0
    claim = repo.claim(job.items[0].id, 30)
    assert claim is not None
    repo.retry_later(claim, 0.0, "transient_error", "hiccup")
    item = repo.get_item(claim.item.id)
    assert (item.attempts, item.failures, item.lease_losses) == (4, 1, 2)
    assert not repo.cancel_requested(job.id)
    repo.cancel_job(job.id, scope=SYSTEM)
    assert repo.cancel_requested(job.id)


def test_stuck_queued_items_fail_with_a_helpful_message(repo: Repository) -> None:
    job = make_job(1, created_offset=-100)
    repo.create_job(job)
    assert repo.fail_stuck(older_than_seconds=50) == [job.items[0].id]
    item = repo.get_item(job.items[0].id)
    assert item.status == Status.failed and "workers are running" in (item.error_message or "")


def test_expiry_keeps_a_tombstone_without_files(repo: Repository) -> None:
    old = make_job(1, ttl=-1)
    unfinished = make_job(1, ttl=-1)
    fresh = make_job(1)
    for job in (old, unfinished, fresh):
        repo.create_job(job)
    claim = repo.claim(old.items[0].id, 30)
    assert claim is not None
    repo.finish_succeeded(claim, f"{old.id}/results/0.png", "r.png", {}, 0.1)
    assert repo.expired_jobs() == [old.id]
    assert set(repo.blob_keys(old.id)) == {old.items[0].input_key, f"{old.id}/results/0.png"}
    repo.mark_expired(old.id)
    tomb = repo.get_job(old.id, scope=SYSTEM)
    assert tomb.data_removed and tomb.status == JobStatus.expired
    assert tomb.items[0].result_key is None
    assert repo.expired_jobs() == []


def test_delete_removes_rows_and_returns_keys(repo: Repository) -> None:
    job = make_job(2)
    repo.create_job(job)
    assert sorted(repo.delete_job(job.id, scope=SYSTEM)) == sorted(i.input_key for i in job.items)
    with pytest.raises(NotFound):
        repo.get_job(job.id, scope=SYSTEM)


def test_progress_and_stage_are_recorded_by_heartbeats(repo: Repository) -> None:
    job = make_job(1)
    repo.create_job(job)
    claim = repo.claim(job.items[0].id, 30)
    assert claim is not None
    beat = repo.heartbeat(claim, 30, progress=140, stage="tile 3/4")
    assert beat.owned and not beat.cancel_requested
    item = repo.get_item(claim.item.id)
    assert (item.progress, item.stage) == (100, "tile 3/4")


def test_claim_next_takes_a_later_small_job_before_an_earlier_batch(repo: Repository) -> None:
    batch, single = make_job(30), make_job(1)
    repo.create_job(batch)
    first = [repo.claim_next("cpu", 30) for _ in range(3)]
    repo.create_job(single)
    order = []
    while (claim := repo.claim_next("cpu", 30)) is not None:
        order.append(claim.item.job_id)
    assert [c.item.id for c in first if c] == [i.id for i in batch.items[:3]]
    assert len(order) == 28  # every item claimed exactly once
    assert order.index(single.id) <= 1  # not after the batch's 26 other queued items


def test_claim_next_takes_only_due_items_of_its_queue_in_order(repo: Repository) -> None:
    gpu = make_job(1)
    gpu.resource = "gpu"
    job = make_job(3)
    repo.create_job(gpu)
    repo.create_job(job)
    claim = repo.claim_next("cpu", 30)
    assert claim is not None and claim.item.id == job.items[0].id
    assert claim.item.status == Status.running and claim.job.pipeline == job.pipeline
    repo.retry_later(claim, 30, "transient_error", "later")
    taken = [repo.claim_next("cpu", 30) for _ in range(3)]
    assert [c.item.id if c else None for c in taken] == [job.items[1].id, job.items[2].id, None]
    gpu_claim = repo.claim_next("gpu", 30)
    assert gpu_claim is not None and gpu_claim.item.id == gpu.items[0].id


def test_claim_next_races_give_each_item_to_one_worker(repo: Repository) -> None:
    job = make_job(12)
    repo.create_job(job)
    with ThreadPoolExecutor(6) as pool:
        claims = list(pool.map(lambda _: repo.claim_next("cpu", 30), range(16)))
    won = sorted(c.item.id for c in claims if c is not None)
    assert won == sorted(i.id for i in job.items)


def test_finish_and_claim_writes_the_end_and_takes_the_next_item(repo: Repository) -> None:
    job = make_job(2)
    repo.create_job(job)
    claim = repo.claim_next("cpu", 30)
    assert claim is not None
    refused, following = repo.finish_and_claim(
        succeeded(claim, "k/r.png", "in0.png", {"format": "png"}, 0.1), "cpu", 30)
    assert refused is None and following is not None
    assert following.item.id == job.items[1].id
    assert repo.get_item(claim.item.id).status == Status.succeeded
    # a second finish of the same claim is refused, and says why; nothing left to claim
    refused, none = repo.finish_and_claim(
        succeeded(claim, "k/r.png", "in0.png", {}, 0.1), "cpu", 30)
    assert refused is not None and "refused succeeded; it is succeeded" in refused
    assert none is None
    repo.finish(failed(following, "decode_error", "bad", None))
    assert repo.get_job(job.id, scope=SYSTEM).status == JobStatus.partial


def test_a_job_read_carries_a_version_that_grows_with_each_change(repo: Repository) -> None:
    job = make_job(2)
    repo.create_job(job)
    got, version = repo.get_job_versioned(job.id, scope=SYSTEM)
    assert [i.id for i in got.items] == [i.id for i in job.items]
    claim = repo.claim(job.items[1].id, 30)
    assert claim is not None
    _, after_claim = repo.get_job_versioned(job.id, scope=SYSTEM)
    assert after_claim > version
    assert repo.job_version(job.id, scope=SYSTEM) == after_claim
    assert [v for _, v in repo.get_jobs_versioned([job.id, "missing"], scope=SYSTEM)] == [after_claim]


def test_an_owners_many_jobs_queue_behind_each_other_not_before_another_owner(
        repo: Repository) -> None:
    batches = [make_job(5) for _ in range(4)]  # A: 20 items as four jobs
    for job in batches:
        job.owner = "key:a"
        repo.create_job(job)
    first = repo.claim_next("cpu", 30)
    single = make_job(1)
    single.owner = "key:b"
    repo.create_job(single)
    later = make_job(2)  # A again, after B
    later.owner = "key:a"
    repo.create_job(later)
    order = []
    while (claim := repo.claim_next("cpu", 30)) is not None:
        order.append(claim.item.id)
    a_items = [i.id for job in batches for i in job.items]
    assert first is not None and first.item.id == a_items[0]
    assert order.index(single.items[0].id) <= 1  # B does not wait for A's 19 other items
    assert [i for i in order if i in a_items] == a_items[1:]  # A's jobs in the order sent
    assert order[-2:] == [i.id for i in later.items]  # A's later job behind its earlier ones
