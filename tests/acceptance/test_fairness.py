"""Fairness between submitters: one client's big batch does not starve another's small job.

A submits 200 items; then B submits one. B's item must start before most of A's items that
were still waiting when B submitted (the order of start times, read from the items' own
timings, not a wall-clock threshold). Run with the embedded pool on SQLite and on PostgreSQL,
and with a fleet of Celery workers on Redis and PostgreSQL. The measured wait is printed.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from imgq.store import tables
from imgq.store.db import make_engine, migrate
from tests.fixtures.encoded import jpeg_bytes
from tests.acceptance.fleet_support import BROKERS, Fleet, broker_reachable, forget_queues
from tests.conftest import service_missing

BATCH = 200
PIPELINE = "blur:radius=3|resize:width=64|encode:format=jpeg"
WORKERS = 2


def _clean(url: str) -> None:
    engine = make_engine(url)
    migrate(engine)
    with engine.begin() as conn:  # the PostgreSQL schema lives for the session: start empty
        conn.execute(tables.items.delete())
        conn.execute(tables.jobs.delete())
    engine.dispose()


@pytest.fixture(params=["embedded-sqlite", "embedded-postgres", "celery-redis-postgres"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    settings: dict[str, str] = {"data_dir": str(tmp_path / "data"), "log_level": "WARNING",
                                "max_files": str(BATCH)}
    tag = uuid.uuid4().hex[:8]
    if request.param != "embedded-sqlite":
        postgres_url = request.getfixturevalue("postgres_url")
        _clean(postgres_url)
        settings["database_url"] = postgres_url
    if request.param.startswith("celery"):
        problem = broker_reachable(BROKERS["redis"])
        if problem:
            service_missing("redis", problem)
        settings.update({"broker_url": BROKERS["redis"], "cpu_queue": f"cpu-{tag}",
                         "gpu_queue": f"gpu-{tag}", "sweep_queue": f"sweep-{tag}"})
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(settings, logs)
    try:
        if "broker_url" in settings:
            url = fleet.serve()
            fleet.worker(WORKERS)
            fleet.beat()
        else:
            url = fleet.serve(workers=WORKERS)
        yield url
    finally:
        fleet.stop_all()
        if "broker_url" in settings:
            forget_queues(BROKERS["redis"], [settings["cpu_queue"], settings["gpu_queue"],
                                             settings["sweep_queue"]])


def _submit(api: str, images: list[bytes], prefix: str) -> dict[str, Any]:
    files = [("files", (f"{prefix}-{n}.jpg", data, "image/jpeg")) for n, data in enumerate(images)]
    response = httpx.post(f"{api}/v1/jobs", files=files, data={"pipeline": PIPELINE}, timeout=120)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _finished(api: str, job_ids: list[str], timeout: float = 300) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = httpx.get(f"{api}/v1/jobs", params={"ids": ",".join(job_ids)}, timeout=30).json()
        if all(j["status"] not in ("queued", "running") for j in jobs["jobs"]):
            return [i for j in jobs["jobs"] for i in j["items"]]
        assert time.monotonic() < deadline, f"not finished in {timeout:.0f} s"
        time.sleep(0.2)


def _at(item: dict[str, Any], name: str) -> float:
    return datetime.fromisoformat(item["timings"][name]).timestamp()


def test_a_one_image_job_starts_before_most_of_an_earlier_big_batch(api: str) -> None:
    batch = [jpeg_bytes(480, 320, seed=n) for n in range(BATCH)]
    first = _submit(api, batch, "a")
    time.sleep(0.5)  # A's batch is under way
    second = _submit(api, [jpeg_bytes(480, 320, seed=999)], "b")
    items = _finished(api, [first["id"], second["id"]])
    assert all(i["status"] == "succeeded" for i in items), [i["error"] for i in items]
    mine = next(i for i in items if i["name"] == "b-0.jpg")
    submitted, started = _at(mine, "queued_at"), _at(mine, "started_at")
    waiting = [i for i in items if i["name"] != "b-0.jpg" and _at(i, "started_at") > submitted]
    ahead = [i for i in waiting if _at(i, "started_at") < started]
    print(f"\nB waited {started - submitted:.3f} s; {len(ahead)} of A's {len(waiting)} waiting "
          f"items started before it")
    assert waiting, "A's batch had finished before B submitted: nothing was measured"
    assert len(ahead) < len(waiting) / 2, (len(ahead), len(waiting))
    assert len(ahead) <= 2 * WORKERS + 2, f"{len(ahead)} of A's items went before B's"
