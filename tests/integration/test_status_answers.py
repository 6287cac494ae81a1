"""GET /v1/jobs/{id} and ?ids= answer, byte for byte, what the job's models make of the job as
SQLAlchemy's typed columns read it (`job_out(...).model_dump_json()`), for jobs in every
state, on SQLite and PostgreSQL: the status read takes the driver's raw values and renders
without the models, and must not differ from them in one byte. A download's item lookup reads
the same raw values and must make the same items."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from imgq.api.app import create_app
from imgq.compose import open_runtime
from imgq.config import load_settings
from imgq.domain.access import SYSTEM
from imgq.domain.models import Job
from imgq.domain.status import Status
from imgq.domain.views import job_out
from imgq.store.repository import Repository
from imgq.store.repository.base import item_from_row, job_from_row
from imgq.store.tables import items, jobs
from tests.contract.conftest import make_job

BASE = "http://127.0.0.1"


def stored(repo: Repository, job_id: str) -> Job:
    """The job as SQLAlchemy's typed columns read it (the reference)."""
    with repo.engine.connect() as conn:
        job = job_from_row(conn.execute(select(jobs).where(jobs.c.id == job_id)).one())
        job.items = [item_from_row(r) for r in conn.execute(
            select(items).where(items.c.job_id == job_id).order_by(items.c.idx))]
    return job


def set_items(repo: Repository, job: Job, changes: list[dict[str, Any]],
              **job_changes: Any) -> None:
    with repo.engine.begin() as conn:
        for item, values in zip(job.items, changes):
            if values:
                conn.execute(update(items).where(items.c.id == item.id).values(**values))
        if job_changes:
            conn.execute(update(jobs).where(jobs.c.id == job.id).values(**job_changes))


def jobs_in_every_state(repo: Repository) -> list[str]:
    made: list[str] = []

    def new(n: int, **changes: Any) -> Job:
        job = make_job(n)
        job.pipeline = [{"op": "resize", "width": 100, "fit": "cover"},
                        {"op": "encode", "format": "jpeg", "quality": 0.85}]
        job.items[0].input_name = "café ☕ “quoted” \\ name.png"
        job.items[-1].input_meta = {**job.items[-1].input_meta, "estimated_seconds": 3}
        for key, value in changes.items():
            setattr(job, key, value)
        repo.create_job(job)
        made.append(job.id)
        return job

    now = new(1).created_at
    round_second = now.replace(microsecond=0)
    running = new(3)
    set_items(repo, running, [
        {"status": "running", "progress": 37, "stage": "tile 12/48", "attempts": 1,
         "started_at": round_second, "lease_until": now + timedelta(seconds=30),
         "claim_token": str(uuid.uuid4())},
        {"status": "succeeded", "progress": 100, "attempts": 1, "started_at": now,
         "finished_at": now, "processing_seconds": 0.012345678901234,
         "result_name": "in1.jpg", "result_key": f"{running.id}/results/1.jpg",
         "result_meta": {"format": "jpeg", "width": 100, "height": 75, "bytes": 2345}},
        {"status": "queued", "attempts": 1, "error_code": "worker_lost",
         "error_message": "its worker stopped answering; retried",
         "not_before": now + timedelta(seconds=5)},
    ])
    succeeded = new(2)
    set_items(repo, succeeded, [
        {"status": "succeeded", "progress": 100, "attempts": 1, "started_at": now,
         "finished_at": now + timedelta(seconds=2), "processing_seconds": 1.0,
         "result_name": "ünïcode.webp", "result_key": f"{succeeded.id}/results/0.webp",
         "result_meta": {"format": "webp", "width": 10, "height": 10, "bytes": 99,
                         "details": {"model": "m", "seed": 7, "prompt_used": "a “cat”",
                                     "score": 1e-05, "big": 1e16}}},
        {"status": "succeeded", "progress": 100, "attempts": 2, "started_at": now,
         "finished_at": now, "processing_seconds": 2.5e-07, "result_name": "b.png",
         "result_key": f"{succeeded.id}/results/1.png",
         "result_meta": {"format": "png", "width": 4, "height": 4, "bytes": 10}},
    ])
    failed = new(2)
    set_items(repo, failed, [
        {"status": "failed", "attempts": 3, "failures": 3, "started_at": now,
         "finished_at": now, "error_code": "decode_error",
         "error_message": "not an image: <bytes> & \"quotes\""},
        {"status": "succeeded", "progress": 100, "attempts": 1, "started_at": now,
         "finished_at": now, "processing_seconds": 0.5, "result_name": "in1.png",
         "result_key": f"{failed.id}/results/1.png",
         "result_meta": {"format": "png", "width": 4, "height": 4, "bytes": 10}},
    ])
    cancelled = new(2)
    set_items(repo, cancelled, [
        {"status": "cancelled", "finished_at": now, "stage": "cancelled",
         "error_code": "cancelled", "error_message": "cancelled before it ran"},
        {"status": "cancelled", "progress": 60, "started_at": now, "finished_at": now,
         "error_code": "cancelled", "error_message": None},
    ], cancel_requested=True)
    expired = new(2)
    set_items(repo, expired, [
        {"status": "expired", "started_at": now, "finished_at": now,
         "result_name": "x.png", "result_key": None,
         "result_meta": {"format": "png", "width": 4, "height": 4, "bytes": 10}},
        {"status": "expired", "error_code": "decode_error", "error_message": "bad"},
    ], data_removed=True)
    new(1, owner=None, extra={"attachments": {}})  # queued, no owner
    made_image = new(1)
    set_items(repo, made_image, [{"input_meta": {"estimated_seconds": 12.5}}])  # generate
    return made


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'imgq.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_status_answers_are_the_models_json_byte_for_byte(database_url: str,
                                                          tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, database_url=database_url,
                             status_cache_seconds=0)
    app = create_app(open_runtime(settings, run_migrations=True), sweeper=False)
    repo: Repository = app.state.runtime.repo
    try:
        ids = jobs_in_every_state(repo)
        expected = {i: job_out(stored(repo, i), BASE).model_dump_json().encode() for i in ids}

        async def read() -> None:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
                for job_id in ids:
                    answer = await client.get(f"/v1/jobs/{job_id}")
                    assert answer.status_code == 200
                    assert answer.content == expected[job_id], job_id
                listed = await client.get("/v1/jobs", params={"ids": ",".join(ids)})
                assert listed.status_code == 200
                assert listed.content == (
                    b'{"jobs":[' + b",".join(expected[i] for i in ids)
                    + f'],"total":{len(ids)},"limit":{len(ids)},"offset":0,"next":null}}'
                    .encode())

        asyncio.run(read())
        for job_id in ids:  # a download's lookup reads each item as the typed columns do
            reference = stored(repo, job_id)
            for item in reference.items:
                assert repo.get_job_item(job_id, item.idx, scope=SYSTEM) == (
                    reference.data_removed, item)
        states = {json.loads(expected[i])["status"] for i in ids}
        assert states == {"queued", "running", "succeeded", "partial", "cancelled", "expired"}
        assert {s.value for s in Status} <= {
            item["status"] for i in ids for item in json.loads(expected[i])["items"]}
    finally:
        app.state.runtime.close()
