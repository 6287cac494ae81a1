"""What a Celery fleet costs the broker per item: one message, nothing more.

A real `imgq serve` and `imgq worker` on the shared Redis and PostgreSQL, with queues of the
test's own. Items submitted while no worker runs leave exactly one message each in the queue;
the worker then runs them without publishing a task event (three per task when events are on:
received, started, succeeded; its heartbeats, every few seconds, stay) and without Celery's
own log lines per task.
"""

from __future__ import annotations

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


@pytest.fixture
def fleet(postgres_url: str, tmp_path: Path) -> Iterator[Fleet]:
    problem = broker_reachable(BROKERS["redis"])
    if problem:
        service_missing("redis", problem)
    empty_schema(postgres_url)
    tag = uuid.uuid4().hex[:8]
    settings = {
        "broker_url": BROKERS["redis"], "database_url": postgres_url,
        "data_dir": str(tmp_path / "data"), "storage_url": (tmp_path / "blobs").as_uri(),
        "cpu_queue": f"cpu-{tag}", "gpu_queue": f"gpu-{tag}", "sweep_queue": f"sweep-{tag}",
        "log_level": "INFO", "ai_measure_on_start": "false", "max_files": str(ITEMS),
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    running = Fleet(settings, logs)
    try:
        yield running
    finally:
        running.stop_all()
        forget_queues(BROKERS["redis"], [settings["cpu_queue"], settings["gpu_queue"],
                                          settings["sweep_queue"]])


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


def test_one_broker_message_per_item_and_no_task_events(fleet: Fleet) -> None:
    import redis

    api = fleet.serve()
    files = [("files", (f"img-{i}.jpg", jpeg_bytes(160, 120, seed=i), "image/jpeg"))
             for i in range(ITEMS)]
    response = httpx.post(f"{api}/v1/jobs", files=files,
                          data={"pipeline": "resize:width=50|encode:format=jpeg"}, timeout=60)
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    queue = fleet.settings["cpu_queue"]
    broker = redis.Redis.from_url(BROKERS["redis"])
    deadline = time.monotonic() + 30  # the API publishes from a background thread
    while broker.llen(queue) < ITEMS and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # nothing more comes
    assert broker.llen(queue) == ITEMS
    broker.close()

    events = EventListener(BROKERS["redis"])
    try:
        worker = fleet.worker(2)
        deadline = time.monotonic() + 90
        while True:
            job = httpx.get(f"{api}/v1/jobs/{job_id}", timeout=10).json()
            if job["status"] not in ("queued", "running"):
                break
            fleet.check_alive()
            assert time.monotonic() < deadline, fleet.log_text()
            time.sleep(0.2)
        assert job["status"] == "succeeded", job
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
