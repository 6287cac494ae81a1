"""The rest of the repository's contract, on SQLite and PostgreSQL: versions for live events,
the webhook outbox, counts for /metrics, the older API's integer task ids, and ping."""

from __future__ import annotations

from datetime import timedelta

import pytest

from imgq.domain.access import SYSTEM
from imgq.errors import InvalidTransition
from imgq.store import tables
from imgq.store.repository import WEBHOOK_DELIVERED, WEBHOOK_FAILED, Repository, utcnow
from tests.contract.conftest import make_job


@pytest.fixture(autouse=True)
def _empty_outbox(repo: Repository) -> None:
    with repo.engine.begin() as conn:
        conn.execute(tables.webhooks.delete())
        conn.execute(tables.compat_tasks.delete())


def _finish_all(repo: Repository, job_id: str) -> None:
    for item in repo.get_job(job_id, scope=SYSTEM).items:
        claim = repo.claim(item.id, 30)
        assert claim is not None
        repo.finish_succeeded(claim, f"{job_id}/r{item.idx}", "r.png", {"format": "png"}, 0.1)


def test_a_jobs_version_grows_with_every_change_and_the_snapshot_matches_it(
        repo: Repository) -> None:
    job = make_job(2)
    repo.create_job(job)
    first = repo.job_version(job.id, scope=SYSTEM)
    assert first is not None
    claim = repo.claim(job.items[0].id, 30)
    assert claim is not None
    after_claim = repo.job_version(job.id, scope=SYSTEM)
    repo.heartbeat(claim, 30, progress=40, stage="half")
    after_beat = repo.job_version(job.id, scope=SYSTEM)
    assert first < after_claim < after_beat
    snapshot = repo.job_snapshot(job.id, scope=SYSTEM)
    assert snapshot is not None
    found, version = snapshot
    assert version == after_beat and found.items[0].progress == 40


def test_an_unknown_job_has_no_version_and_no_snapshot(repo: Repository) -> None:
    assert repo.job_version("no-such-job", scope=SYSTEM) is None
    assert repo.job_snapshot("no-such-job", scope=SYSTEM) is None


def test_a_webhook_waits_for_its_job_to_finish_then_is_leased_to_one_sender(
        repo: Repository) -> None:
    job = make_job(1)
    repo.create_job(job, callback_url="https://hooks.example/imgq", base_url="http://imgq")
    assert repo.claim_webhooks(lease_seconds=30) == []  # the job is still queued
    _finish_all(repo, job.id)
    (delivery,) = repo.claim_webhooks(lease_seconds=30)
    assert (delivery.job_id, delivery.url, delivery.attempts) == (
        job.id, "https://hooks.example/imgq", 1)
    assert repo.claim_webhooks(lease_seconds=30) == []  # leased: nobody else takes it


def test_a_webhook_is_recorded_delivered_once(repo: Repository) -> None:
    job = make_job(1)
    repo.create_job(job, callback_url="https://hooks.example/a")
    _finish_all(repo, job.id)
    (delivery,) = repo.claim_webhooks(lease_seconds=30)
    repo.webhook_done(delivery)
    with repo.engine.connect() as conn:
        row = conn.execute(tables.webhooks.select()).one()
    assert row.status == WEBHOOK_DELIVERED and row.delivered_at is not None
    with pytest.raises(InvalidTransition):
        repo.webhook_done(delivery)  # the same attempt cannot be recorded twice


def test_a_failed_webhook_is_due_again_at_its_retry_time_or_given_up(repo: Repository) -> None:
    job = make_job(1)
    repo.create_job(job, callback_url="https://hooks.example/b")
    _finish_all(repo, job.id)
    (first,) = repo.claim_webhooks(lease_seconds=30)
    repo.webhook_done(first, "connect timeout", retry_at=utcnow() - timedelta(seconds=1))
    (second,) = repo.claim_webhooks(lease_seconds=30)
    assert second.attempts == 2 and second.last_error == "connect timeout"
    repo.webhook_done(second, "HTTP 500")  # no retry time: given up
    with repo.engine.connect() as conn:
        row = conn.execute(tables.webhooks.select()).one()
    assert (row.status, row.last_error) == (WEBHOOK_FAILED, "HTTP 500")
    assert repo.claim_webhooks(lease_seconds=30) == []


def test_counts_by_status_and_the_metrics_snapshot(repo: Repository) -> None:
    job = make_job(3)
    repo.create_job(job)
    claim = repo.claim(job.items[0].id, 30)
    assert claim is not None
    repo.finish_succeeded(claim, "k", "r.png", {"format": "png"}, 0.25)
    failed = repo.claim(job.items[1].id, 30)
    assert failed is not None
    repo.finish_failed(failed, "decode_error", "truncated")
    assert repo.count_by_status() == {"succeeded": 1, "failed": 1, "queued": 1}
    snapshot = repo.metrics_snapshot(buckets=[0.1, 1.0])
    assert snapshot["queue_depth"] == [("cpu", 1)]
    assert snapshot["failed"] == [("decode_error", 1)]
    ((pipeline, count, total, under_tenth, under_one),) = snapshot["processing"]
    assert '"grayscale"' in pipeline and (count, under_tenth, under_one) == (1, 0, 1)
    assert total == pytest.approx(0.25)


def test_integer_task_ids_lead_back_to_their_jobs(repo: Repository) -> None:
    first, second = make_job(1), make_job(1)
    repo.create_job(first)
    repo.create_job(second)
    repo.add_compat_task(2**40 + 1, "queue_demo", first.id, "cat.png")
    repo.add_compat_task(2**40 + 2, "queue_demo", second.id, "cat.png")
    assert repo.compat_task_job("queue_demo", task_id=2**40 + 1, scope=SYSTEM) == first.id
    assert repo.compat_task_job("queue_demo", filename="cat.png", scope=SYSTEM) == second.id  # the newest
    assert repo.compat_task_job("other_system", task_id=2**40 + 1, scope=SYSTEM) is None
    assert repo.compat_task_job("queue_demo", task_id=7, scope=SYSTEM) is None


def test_ping_answers_while_the_database_is_reachable(repo: Repository) -> None:
    repo.ping()
    repo.engine.dispose()
    repo.ping()  # a new connection is made after the pool was emptied
