"""What a fleet costs the broker per job: a message per worker process, nothing more.

A real `imgq serve` and `imgq worker` on the shared Redis (or NATS) and PostgreSQL, with queues
of the test's own. A job of 12 items submitted while no worker runs leaves two messages in the
queue (the fleet has two worker processes), which name the 12 items between them; the Celery
worker then runs them without publishing a task event (three per task when events are on:
received, started, succeeded; its heartbeats, every few seconds, stay) and without Celery's
own log lines per task.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.fleet_support import (
    BROKERS,
    Fleet,
    broker_reachable,
    empty_schema,
    forget_queues,
)
from tests.conftest import service_missing
from tests.fixtures.encoded import jpeg_bytes

ITEMS = 12
WORKERS = 2


def fleet_on(broker: str, postgres_url: str, tmp_path: Path) -> Iterator[Fleet]:
    """A fleet's settings on a shared broker with queues of the test's own, removed after."""
    url = BROKERS[broker]
    problem = broker_reachable(url)
    if problem:
        service_missing(broker, problem)
    empty_schema(postgres_url)
    tag = uuid.uuid4().hex[:8]
    settings = {
        "broker_url": url, "database_url": postgres_url,
        "data_dir": str(tmp_path / "data"), "storage_url": (tmp_path / "blobs").as_uri(),
        "cpu_queue": f"cpu-{tag}", "gpu_queue": f"gpu-{tag}", "sweep_queue": f"sweep-{tag}",
        "log_level": "INFO", "ai_measure_on_start": "false", "max_files": str(ITEMS),
        "workers": str(WORKERS),
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    running = Fleet(settings, logs)
    try:
        yield running
    finally:
        running.stop_all()
        forget_queues(url, [settings["cpu_queue"], settings["gpu_queue"], settings["sweep_queue"]])


@pytest.fixture
def fleet(postgres_url: str, tmp_path: Path) -> Iterator[Fleet]:
    yield from fleet_on("redis", postgres_url, tmp_path)


@pytest.fixture
def nats_fleet(postgres_url: str, tmp_path: Path) -> Iterator[Fleet]:
    yield from fleet_on("nats", postgres_url, tmp_path)


def submit_job(api: str) -> tuple[str, list[str]]:
    """A job of ITEMS small JPEGs: its id and its items' ids."""
    files = [("files", (f"img-{i}.jpg", jpeg_bytes(160, 120, seed=i), "image/jpeg"))
             for i in range(ITEMS)]
    response = httpx.post(f"{api}/v1/jobs", files=files,
                          data={"pipeline": "resize:width=50|encode:format=jpeg"}, timeout=60)
    assert response.status_code == 201, response.text
    body = response.json()
    return body["id"], [item["id"] for item in body["items"]]


def wait_succeeded(fleet: Fleet, api: str, job_id: str) -> None:
    deadline = time.monotonic() + 90
    while True:
        job = httpx.get(f"{api}/v1/jobs/{job_id}", timeout=10).json()
        if job["status"] not in ("queued", "running"):
            break
        fleet.check_alive()
        assert time.monotonic() < deadline, fleet.log_text()
        time.sleep(0.2)
    assert job["status"] == "succeeded", job


class EventListener:
    """Every Celery event published on the broker while it listens (Redis pub/sub)."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe("*celeryev*")
        self.bodies: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        while not self.stop.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message is not None:
                self.bodies.append(message["data"].decode(errors="replace"))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.pubsub.close()
        self.client.close()


def named_items(raw: bytes) -> list[str]:
    """The item ids a queued Celery message (protocol 2, JSON) names."""
    args, _kwargs, _embed = json.loads(base64.b64decode(json.loads(raw)["body"]))
    return list(args[0])


def test_a_job_is_one_broker_message_per_worker_process_and_no_task_events(
        fleet: Fleet) -> None:
    import redis

    api = fleet.serve()
    job_id, items = submit_job(api)
    queue = fleet.settings["cpu_queue"]
    broker = redis.Redis.from_url(BROKERS["redis"])
    deadline = time.monotonic() + 30  # the API publishes from a background thread
    while broker.llen(queue) < WORKERS and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # nothing more comes
    messages = [named_items(raw) for raw in broker.lrange(queue, 0, -1)]
    broker.close()
    assert len(messages) == WORKERS, messages
    assert sorted(sum(messages, [])) == sorted(items)  # each item named once

    events = EventListener(BROKERS["redis"])
    try:
        worker = fleet.worker(WORKERS)
        wait_succeeded(fleet, api, job_id)
        time.sleep(1.0)  # an event sent at the end would have arrived by now
    finally:
        events.close()
    ours = f"imgq-worker-{worker.pid}@"
    sent = [json.loads(body)["properties"]["delivery_info"]["routing_key"]
            for body in events.bodies if ours in body]
    assert sent, "the listener heard not even the worker's heartbeat"
    assert not [key for key in sent if not key.startswith("worker.")], sent
    log = next(path for role, process, path in fleet.processes if process is worker)
    text = log.read_text(errors="replace")
    assert text.count(": succeeded in") == ITEMS  # imgq's own line per item
    assert "Task imgq.run_item[" not in text  # none of Celery's per task


def test_a_nats_job_is_one_message_per_worker_process(nats_fleet: Fleet) -> None:
    import asyncio

    import nats

    from imgq.dispatch.nats import stream_name

    api = nats_fleet.serve()
    job_id, items = submit_job(api)
    stream = stream_name(nats_fleet.settings["cpu_queue"])

    async def stored() -> list[list[str]]:
        nc = await nats.connect(BROKERS["nats"])
        try:
            js = nc.jetstream()
            deadline = time.monotonic() + 30  # the API publishes from a background thread
            while True:
                try:
                    state = (await js.stream_info(stream)).state
                except Exception:  # the stream is made with the first publish
                    state = None
                if state is not None and state.messages >= WORKERS:
                    break
                assert time.monotonic() < deadline, "no messages were published"
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # nothing more comes
            state = (await js.stream_info(stream)).state
            return [(await js.get_msg(stream, seq)).data.decode().split(",")
                    for seq in range(state.first_seq, state.last_seq + 1)]
        finally:
            await nc.close()

    messages = asyncio.run(stored())
    assert len(messages) == WORKERS, messages
    assert sorted(sum(messages, [])) == sorted(items)  # each item named once
    nats_fleet.worker(WORKERS)
    wait_succeeded(nats_fleet, api, job_id)
