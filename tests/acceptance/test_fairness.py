"""Fairness between owners: one key's big batch does not starve another key's small job.

With API keys (IMGQ_AUTH=keys), key A submits 200 items (20 jobs of 10); then key B submits
one. B's item must start before most of A's items that
were still waiting when B submitted (the order of start times, read from the items' own
timings, not a wall-clock threshold). Run with the embedded pool on SQLite and on PostgreSQL,
and with a fleet of Celery workers on Redis and PostgreSQL. The measured wait is printed.
"""

from __future__ import annotations

import functools
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from imgq.store import tables
from imgq.store.db import make_engine, migrate
from tests.fixtures.encoded import jpeg_bytes
from tests.acceptance.fleet_support import (
    BROKERS,
    Fleet,
    broker_reachable,
    forget_queues,
    imgq_command,
)
from tests.conftest import service_missing

BATCH, PER_JOB = 200, 10
PIPELINE = "blur:radius=6|resize:width=64|encode:format=jpeg"  # some work per item
WORKERS = 2


def _clean(url: str) -> None:
    engine = make_engine(url)
    migrate(engine)
    with engine.begin() as conn:  # the PostgreSQL schema lives for the session: start empty
        conn.execute(tables.items.delete())
        conn.execute(tables.jobs.delete())
    engine.dispose()


@dataclass
class Service:
    url: str
    a: dict[str, str]  # key A's Authorization header
    b: dict[str, str]


def _key(fleet: Fleet, name: str) -> dict[str, str]:
    made = subprocess.run([*imgq_command(), "keys", "create", name], env=fleet.env(),
                          capture_output=True, text=True, timeout=60, check=True)
    return {"Authorization": f"Bearer {made.stdout.strip()}"}


@pytest.fixture(params=["embedded-sqlite", "embedded-postgres", "celery-redis-postgres"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    settings: dict[str, str] = {"data_dir": str(tmp_path / "data"), "log_level": "WARNING",
                                "auth": "keys"}
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
        found = Service(url, _key(fleet, f"a-{tag}"), _key(fleet, f"b-{tag}"))
        warm = _submit(found, found.a, [jpeg_bytes(480, 320, seed=1000)], "warm-up")
        _finished(found, found.a, [warm["id"]])  # the workers have started
        yield found
    finally:
        fleet.stop_all()
        if "broker_url" in settings:
            forget_queues(BROKERS["redis"], [settings["cpu_queue"], settings["gpu_queue"],
                                             settings["sweep_queue"]])


def _submit(service: Service, key: dict[str, str], images: list[bytes],
            prefix: str) -> dict[str, Any]:
    files = [("files", (f"{prefix}-{n}.jpg", data, "image/jpeg")) for n, data in enumerate(images)]
    response = httpx.post(f"{service.url}/v1/jobs", files=files, data={"pipeline": PIPELINE},
                          headers=key, timeout=120)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _finished(service: Service, key: dict[str, str], job_ids: list[str],
              timeout: float = 300) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = httpx.get(f"{service.url}/v1/jobs", params={"ids": ",".join(job_ids)},
                         headers=key, timeout=30).json()
        if all(j["status"] not in ("queued", "running") for j in jobs["jobs"]):
            return [i for j in jobs["jobs"] for i in j["items"]]
        assert time.monotonic() < deadline, f"not finished in {timeout:.0f} s"
        time.sleep(0.2)


def _at(item: dict[str, Any], name: str) -> float:
    return datetime.fromisoformat(item["timings"][name]).timestamp()


@functools.cache
def a_batch() -> tuple[bytes, ...]:
    """Key A's BATCH photos (seconds of encoding), made once for the three services."""
    return tuple(jpeg_bytes(1000, 700, seed=n) for n in range(BATCH))


def test_a_one_image_job_starts_before_most_of_an_earlier_big_batch(service: Service) -> None:
    batch = a_batch()
    with ThreadPoolExecutor(4) as pool:  # A's 20 jobs go in quickly, as a client would send them
        a_jobs = list(pool.map(lambda n: _submit(service, service.a, batch[n:n + PER_JOB],
                                                 f"a{n}")["id"], range(0, BATCH, PER_JOB)))
    b_job = _submit(service, service.b, [jpeg_bytes(480, 320, seed=999)], "b")["id"]
    items = _finished(service, service.a, a_jobs) + _finished(service, service.b, [b_job])
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
