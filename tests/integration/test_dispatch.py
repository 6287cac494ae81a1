"""The Dispatcher contract on every broker: a real `imgq worker` runs what was submitted.

Runs against the local Redis, RabbitMQ and NATS (skipped with a reason when one is absent on a
laptop; a failure in CI), on PostgreSQL, with fresh queue names per test.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import pyvips

from imgq.compose import make_dispatcher
from imgq.config import Settings, load_settings
from imgq.dispatch.base import Dispatcher
from imgq.dispatch.sweeper import FleetSweeper
from imgq.domain.access import SYSTEM
from imgq.domain.models import Item, Job
from imgq.domain.status import Status
from imgq.store import tables
from imgq.store.repository import utcnow
from imgq.worker.runtime import Runtime
from tests.acceptance.fleet_support import (
    BROKERS,
    Fleet,
    broker_reachable,
    forget_queues,
)
from tests.conftest import service_missing

WAIT = 60.0


@pytest.fixture(params=sorted(BROKERS))
def fleet_settings(request: pytest.FixtureRequest, postgres_url: str,
                   tmp_path: Path) -> Iterator[dict[str, str]]:
    url = BROKERS[request.param]
    problem = broker_reachable(url)
    if problem:
        service_missing(request.param, problem)
    tag = uuid.uuid4().hex[:8]
    settings = {
        "broker_url": url, "database_url": postgres_url, "data_dir": str(tmp_path / "data"),
        "storage_url": (tmp_path / "blobs").as_uri(), "cpu_queue": f"cpu-{tag}",
        "gpu_queue": f"gpu-{tag}", "sweep_queue": f"sweep-{tag}", "lease_seconds": "5",
        "outbox_grace_seconds": "0.5", "log_level": "INFO",
    }
    yield settings
    forget_queues(url, [settings["cpu_queue"], settings["gpu_queue"], settings["sweep_queue"]])


@pytest.fixture
def rt(fleet_settings: dict[str, str]) -> Iterator[Runtime]:
    runtime = Runtime.from_settings(load_settings(**fleet_settings), run_migrations=True)
    with runtime.repo.engine.begin() as conn:  # the schema lives for the session: start empty
        conn.execute(tables.items.delete())
        conn.execute(tables.jobs.delete())
    yield runtime
    runtime.close()


@pytest.fixture
def fleet(fleet_settings: dict[str, str], tmp_path: Path, rt: Runtime) -> Iterator[Fleet]:
    logs = tmp_path / "logs"
    logs.mkdir()
    running = Fleet(fleet_settings, logs)
    running.worker(2)
    try:
        yield running
    finally:
        running.stop_all()


@pytest.fixture
def dispatcher(rt: Runtime) -> Iterator[Dispatcher]:
    found = make_dispatcher(rt.settings, embedded_workers=False)
    assert found is not None
    found.start()
    yield found
    found.stop()


def new_job(rt: Runtime, n: int, tmp_path: Path) -> Job:
    """A job of n small PNGs, stored and committed as the API does, not yet published."""
    now = utcnow()
    job_id = str(uuid.uuid4())
    source = tmp_path / f"in-{job_id}.png"
    items = []
    for idx in range(n):
        pyvips.Image.xyz(40 + idx, 30)[0].cast("uchar").pngsave(str(source))
        key = f"{job_id}/inputs/{idx}.png"
        rt.blobs.put_file(key, source)
        items.append(Item(id=str(uuid.uuid4()), job_id=job_id, idx=idx, status=Status.queued,
                          input_name=f"in{idx}.png", input_key=key, queued_at=now,
                          input_meta={"format": "png", "width": 40 + idx, "height": 30,
                                      "bytes": 100}))
    job = Job(id=job_id, created_at=now, expires_at=now + timedelta(hours=1),
              pipeline=[{"op": "grayscale"}], resource="cpu", item_count=n, items=items)
    rt.repo.create_job(job)
    return job


def wait_done(rt: Runtime, fleet: Fleet, job: Job, timeout: float = WAIT) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        found = rt.repo.get_job(job.id, scope=SYSTEM)
        if all(i.status not in (Status.queued, Status.running) for i in found.items):
            return found
        fleet.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"items not finished in {timeout:.0f} s: "
                                 f"{[i.status.value for i in found.items]}\n{fleet.log_text()}")
        time.sleep(0.1)


def result_files(settings: Settings, job: Job) -> list[Path]:
    root = Path(settings.storage_url.removeprefix("file://")) / job.id / "results"
    return sorted(root.iterdir()) if root.exists() else []


def test_submitted_items_are_run_by_a_worker_and_succeed(
        rt: Runtime, fleet: Fleet, dispatcher: Dispatcher, tmp_path: Path) -> None:
    job = new_job(rt, 6, tmp_path)
    dispatcher.submit([i.id for i in job.items], "cpu")
    done = wait_done(rt, fleet, job)
    assert [i.status for i in done.items] == [Status.succeeded] * 6
    assert [i.result_meta["width"] for i in done.items] == [40 + n for n in range(6)]  # type: ignore[index]
    assert len(result_files(rt.settings, job)) == 6


def test_duplicate_messages_run_each_item_once(
        rt: Runtime, fleet: Fleet, dispatcher: Dispatcher, tmp_path: Path) -> None:
    job = new_job(rt, 4, tmp_path)
    ids = [i.id for i in job.items]
    for _ in range(3):
        dispatcher.submit(ids, "cpu")
    done = wait_done(rt, fleet, job)
    assert [(i.status, i.attempts) for i in done.items] == [(Status.succeeded, 1)] * 4
    assert len(result_files(rt.settings, job)) == 4


def test_a_delayed_submit_runs_after_its_delay(
        rt: Runtime, fleet: Fleet, dispatcher: Dispatcher, tmp_path: Path) -> None:
    warm = new_job(rt, 1, tmp_path)  # the worker is up and consuming before the clock starts
    dispatcher.submit([warm.items[0].id], "cpu")
    wait_done(rt, fleet, warm)
    job = new_job(rt, 1, tmp_path)
    start = time.monotonic()
    dispatcher.submit([job.items[0].id], "cpu", delay=2.0)
    time.sleep(1.0)
    assert rt.repo.get_item(job.items[0].id).status == Status.queued
    done = wait_done(rt, fleet, job)
    assert done.items[0].status == Status.succeeded
    assert done.items[0].finished_at is not None
    assert time.monotonic() - start >= 2.0


def test_an_item_never_published_is_published_by_the_fleet_sweeper(
        rt: Runtime, fleet: Fleet, dispatcher: Dispatcher, tmp_path: Path) -> None:
    # A grace period that the job's making and two sweeps surely fit in, on a machine busy
    # with other tests too (the fixture's half second did not, under load)
    rt.settings = rt.settings.model_copy(update={"outbox_grace_seconds": 5.0})
    job = new_job(rt, 3, tmp_path)  # committed, then "the API died" before publishing
    sweeper = FleetSweeper(rt, dispatcher)
    assert sweeper.sweep_queue().dispatched == 0  # not due for the grace period yet
    time.sleep(rt.settings.outbox_grace_seconds + 0.1)
    assert sweeper.sweep_queue().dispatched == 3
    assert sweeper.sweep_queue().dispatched == 0  # not again within the grace period
    done = wait_done(rt, fleet, job)
    assert [i.status for i in done.items] == [Status.succeeded] * 3
