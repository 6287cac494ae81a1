"""The fleet, end to end: two API servers, Celery or NATS workers, a beat, PostgreSQL and S3.

Every process is the real `imgq` command. A batch of 100 items goes in through both API
servers; one worker is SIGKILLed mid-batch (its whole process group, as when its machine dies)
and another started. Every item must end succeeded exactly once: one success ever logged per
item, its result object in the bucket, and each job's ZIP whole. With Redis, the broker itself
is restarted without persistence mid-batch, losing every message, and the batch still finishes.
"""

from __future__ import annotations

import functools
import io
import re
import subprocess
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imgq.blobs.s3 import S3BlobStore
from imgq.config import load_settings
from tests.fixtures.encoded import image_info, jpeg_bytes
from tests.acceptance.fleet_support import (
    BROKERS,
    Fleet,
    S3Server,
    broker_reachable,
    empty_schema,
    forget_queues,
)
from tests.conftest import service_missing
from tests.fixtures.outages import OwnRabbitMQ, OwnRedis

PIPELINE = "blur:radius=6|resize:width=160|encode:format=webp"
JOBS, PER_JOB = 2, 50
#: how long the batch may go without an item changing state: well beyond a lease (4 s below)
#: and NATS's redelivery (6 s), as a killed worker's items wait for them
STALL_TIMEOUT = 150.0
SUCCESS_LINE = re.compile(r"item ([0-9a-f-]{36}): succeeded in")
#: brokers of the test's own, which it may kill and start again (never the shared ones)
OWN_BROKERS = {"own-redis": OwnRedis, "own-amqp": OwnRabbitMQ}


@pytest.fixture
def fleet(request: pytest.FixtureRequest, postgres_url: str, s3_server: S3Server,
          tmp_path: Path) -> Iterator[Fleet]:
    own = OWN_BROKERS[request.param]() if request.param in OWN_BROKERS else None
    if own is not None:
        own.start()
        request.addfinalizer(own.remove)
    url = own.url if own is not None else BROKERS[request.param]
    problem = broker_reachable(url)
    if problem:
        service_missing(request.param, problem)
    empty_schema(postgres_url)
    tag = uuid.uuid4().hex[:8]
    settings = {
        "broker_url": url, "database_url": postgres_url, "data_dir": str(tmp_path / "data"),
        "storage_url": f"s3://{s3_server.new_bucket()}/imgq", **s3_server.settings(),
        "cpu_queue": f"cpu-{tag}", "gpu_queue": f"gpu-{tag}", "sweep_queue": f"sweep-{tag}",
        "lease_seconds": "4", "outbox_grace_seconds": "3", "queue_sweep_interval_seconds": "1",
        "nats_ack_wait_seconds": "6", "max_files": str(PER_JOB), "log_level": "INFO",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    running = Fleet(settings, logs, broker=own)
    try:
        yield running
    finally:
        running.stop_all()
        forget_queues(url, [settings["cpu_queue"], settings["gpu_queue"],
                            settings["sweep_queue"]])


@functools.cache
def batch_images() -> tuple[bytes, ...]:
    """The batch's JOBS × PER_JOB small JPEGs, made once for every test of the module."""
    return tuple(jpeg_bytes(480, 320, seed=n) for n in range(JOBS * PER_JOB))


def submit_batch(apis: list[str]) -> list[str]:
    """JOBS jobs of PER_JOB small JPEGs, alternating between the API servers."""
    job_ids = []
    for n in range(JOBS):
        files = [("files", (f"img-{n}-{i}.jpg", batch_images()[n * PER_JOB + i], "image/jpeg"))
                 for i in range(PER_JOB)]
        response = httpx.post(f"{apis[n % len(apis)]}/v1/jobs", files=files,
                              data={"pipeline": PIPELINE}, timeout=60)
        assert response.status_code == 201, response.text
        job_ids.append(response.json()["id"])
    return job_ids


def counts(api: str, job_ids: list[str]) -> Counter[str]:
    found: Counter[str] = Counter()
    for job_id in job_ids:
        job = httpx.get(f"{api}/v1/jobs/{job_id}", timeout=10).json()
        found.update(i["status"] for i in job["items"])
    return found


def wait_for(fleet: Fleet, api: str, job_ids: list[str], succeeded: int,
             timeout: float = STALL_TIMEOUT) -> Counter[str]:
    """Wait until `succeeded` items have, failing when the batch goes `timeout` seconds without
    moving (the items' counts per status unchanged): a batch that is stuck fails, and one
    that moves slowly on a machine busy with other tests is waited for."""
    deadline = time.monotonic() + timeout
    seen: Counter[str] = Counter()
    while True:
        found = counts(api, job_ids)
        if found["succeeded"] >= succeeded or found["failed"]:
            return found
        fleet.check_alive()
        if found != seen:
            seen, deadline = found, time.monotonic() + timeout
        if time.monotonic() > deadline:
            raise AssertionError(f"{succeeded} items not succeeded, nothing moved in "
                                 f"{timeout:.0f} s: {found}\n{fleet.log_text()}")
        time.sleep(0.2)


def start_fleet(fleet: Fleet) -> tuple[list[str], subprocess.Popen[bytes]]:
    """Two workers and a beat, started while the two API servers start."""
    fleet.beat()
    victim = fleet.worker(2)
    fleet.worker(2)
    return fleet.serves(2), victim


def check_exactly_once(fleet: Fleet, apis: list[str], job_ids: list[str]) -> None:
    total = JOBS * PER_JOB
    assert counts(apis[1], job_ids) == Counter({"succeeded": total})
    successes = Counter(m for _, _, log in fleet.processes if log.exists()
                        for m in SUCCESS_LINE.findall(log.read_text(errors="replace")))
    assert max(successes.values()) == 1, "an item succeeded twice"
    store = S3BlobStore.from_settings(fleet.settings["storage_url"],
                                      load_settings(**fleet.settings))
    for job_id in job_ids:
        job = httpx.get(f"{apis[0]}/v1/jobs/{job_id}", timeout=10).json()
        results = Counter(k.split("/")[-1].split("-")[0] for k in store.keys(f"{job_id}/results"))
        for item in job["items"]:
            # One result object per item; a second can only be left by a worker killed
            # between writing its result and recording it, and that item ran again.
            assert results[str(item["index"])] == 1 or item["attempts"] > 1, item
        archive = httpx.get(f"{apis[0]}/v1/jobs/{job_id}/archive", timeout=60)
        assert archive.status_code == 200
        with zipfile.ZipFile(io.BytesIO(archive.content)) as zf:
            names = zf.namelist()
            assert len(names) == PER_JOB == len(set(names))
            assert all(image_info(zf.read(n))[:2] == ("webp", 160) for n in names)
    metrics = httpx.get(f"{apis[0]}/metrics", timeout=10).text
    assert 'imgq_items{state="succeeded"} ' in metrics
    assert 'imgq_queue_depth{resource="cpu"} 0.0' in metrics
    assert 'imgq_processing_seconds_count{operation="blur|resize|encode"} ' in metrics


@pytest.mark.parametrize("fleet", sorted(BROKERS), indirect=True)
def test_a_batch_survives_a_worker_killed_mid_batch(fleet: Fleet) -> None:
    apis, victim = start_fleet(fleet)
    job_ids = submit_batch(apis)
    found = wait_for(fleet, apis[0], job_ids, succeeded=15)
    assert found["running"] or found["queued"], f"the batch ended before the kill: {found}"
    fleet.kill(victim)
    fleet.worker(2)
    found = wait_for(fleet, apis[0], job_ids, succeeded=JOBS * PER_JOB)
    assert found == Counter({"succeeded": JOBS * PER_JOB}), found
    check_exactly_once(fleet, apis, job_ids)


@pytest.mark.parametrize("fleet", sorted(OWN_BROKERS), indirect=True)
def test_a_batch_finishes_across_a_broker_crash(fleet: Fleet) -> None:
    """The broker is killed mid-batch and started again: Redis without persistence loses every
    queued message; RabbitMQ keeps its durable queues but drops every connection."""
    apis, _ = start_fleet(fleet)
    job_ids = submit_batch(apis)
    wait_for(fleet, apis[0], job_ids, succeeded=15)
    fleet.broker.stop()
    time.sleep(1.0)  # the fleet sees the broker gone for a moment
    fleet.broker.start()
    found = wait_for(fleet, apis[0], job_ids, succeeded=JOBS * PER_JOB)
    assert found == Counter({"succeeded": JOBS * PER_JOB}), found
    check_exactly_once(fleet, apis, job_ids)
