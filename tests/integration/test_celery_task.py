"""The Celery task a fleet worker runs for each message, called in this process on SQLite: a
message for an item that this process already ran to its end costs no claim."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips

from imgq.config import Settings, load_settings
from imgq.dispatch import celery_app
from imgq.domain.access import SYSTEM
from imgq.domain.models import Item, Job
from imgq.domain.status import Status
from imgq.store.repository import utcnow
from imgq.worker.runtime import Runtime

PIPELINE = [{"op": "grayscale", "params": {}}, {"op": "encode", "params": {"format": "png"}}]


def task_app(settings: Settings) -> Iterator[Any]:
    """The Celery app of a worker process on `settings`, with this process's state fresh."""
    Runtime.from_settings(settings, run_migrations=True).close()
    app = celery_app.use_app(celery_app.make_celery(settings))
    celery_app._state.clear()
    celery_app._ended_here.clear()
    yield app
    runtime = celery_app._state.get("runtime")
    if runtime is not None:
        runtime.close()
    celery_app._state.clear()
    celery_app._ended_here.clear()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Any]:
    yield from task_app(load_settings(data_dir=tmp_path, log_level="WARNING",
                                      broker_url="redis://127.0.0.1:1/0"))  # never reached


def submit(rt: Runtime, count: int) -> tuple[str, list[str]]:
    job_id = str(uuid.uuid4())
    now = utcnow()
    items = []
    for idx in range(count):
        src = rt.settings.data_dir / f"in-{job_id}-{idx}.png"
        pyvips.Image.black(20, 10, bands=3).write_to_file(str(src))
        key = f"{job_id}/inputs/{idx}.png"
        rt.blobs.put_file(key, src)
        items.append(Item(id=str(uuid.uuid4()), job_id=job_id, idx=idx, status=Status.queued,
                          input_name="in.png", input_key=key, queued_at=now,
                          input_meta={"format": "png", "width": 20, "height": 10, "bytes": 1}))
    rt.repo.create_job(Job(id=job_id, created_at=now, expires_at=now, pipeline=PIPELINE,
                           resource="cpu", item_count=count, items=items))
    return job_id, [item.id for item in items]


def test_a_message_for_an_item_this_process_ran_costs_no_claim(app: Any) -> None:
    run_item = app.tasks[celery_app.RUN_ITEM]
    rt = celery_app._runtime(app)
    job_id, (first, *others) = submit(rt, 3)
    assert run_item(first) == 3  # one message, and the drain runs the queue's three items
    assert {i.status for i in rt.repo.get_job(job_id, scope=SYSTEM).items} == {Status.succeeded}
    writes = rt.repo.writes
    for item_id in others:  # their messages arrive after the drain ran them
        assert run_item(item_id) == 0
    assert rt.repo.writes == writes, "a claim was tried for an item that had ended here"

    _, (fresh,) = submit(rt, 1)  # an item this process has not run: its message claims it
    assert run_item(fresh) == 1
    assert rt.repo.writes > writes


@pytest.fixture
def redis_app(tmp_path: Path) -> Iterator[Any]:
    """The task's app on the shared Redis, with queues of the test's own."""
    from tests.acceptance.fleet_support import BROKERS, broker_reachable, forget_queues
    from tests.conftest import service_missing

    problem = broker_reachable(BROKERS["redis"])
    if problem:
        service_missing("redis", problem)
    tag = uuid.uuid4().hex[:8]
    settings = load_settings(data_dir=tmp_path, log_level="WARNING", broker_url=BROKERS["redis"],
                             cpu_queue=f"cpu-{tag}", gpu_queue=f"gpu-{tag}",
                             sweep_queue=f"sweep-{tag}")
    yield from task_app(settings)
    forget_queues(BROKERS["redis"], [settings.cpu_queue, settings.gpu_queue, settings.sweep_queue])


def queued_messages(app: Any) -> list[tuple[list[str], bool]]:
    """The item ids each message in the test's queue names, and whether it waits (a countdown)."""
    import base64
    import json

    import redis

    client = redis.Redis.from_url(app.conf.broker_url)
    try:
        raws = client.lrange(app.imgq_settings.cpu_queue, 0, -1)
    finally:
        client.close()
    messages = []
    for raw in raws:
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        messages.append((list(args[0]), message["headers"].get("eta") is not None))
    return messages


def test_items_a_drain_leaves_behind_are_published_again(redis_app: Any) -> None:
    """A message names several items; when its drain stops early (here: an item to retry, its
    storage failing), the items it named and did not run get a message again, at once."""
    run_item = redis_app.tasks[celery_app.RUN_ITEM]
    rt = celery_app._runtime(redis_app)
    blocked_job, (blocked,) = submit(rt, 1)
    (rt.settings.data_dir / "blobs" / blocked_job / "results").write_bytes(b"")  # no folder
    _, named = submit(rt, 2)

    assert run_item([blocked, *named]) == 1  # the first item in fair order waits for a retry
    messages = queued_messages(redis_app)
    assert [ids for ids, waits in messages if waits] == [[blocked]]
    assert sorted(sum((ids for ids, waits in messages if not waits), [])) == sorted(named)


def test_the_apis_publisher_loads_the_brokers_client_when_it_starts(tmp_path: Path) -> None:
    """The API's publisher loads kombu's transport and its driver when it starts, before the
    first request, without connecting (the broker here is never reached): loaded by the first
    publish, in the publisher's thread, it held the interpreter for about 0.4 s while the
    event loop answered status reads. In a process of its own, so that nothing imported by
    other tests is counted."""
    code = f"""
import sys
from imgq.config import load_settings
from imgq.dispatch.celery_app import CeleryDispatcher
settings = load_settings(data_dir={str(tmp_path)!r}, broker_url="redis://127.0.0.1:1/0")
dispatcher = CeleryDispatcher(settings)
loaded = lambda: [m for m in ("kombu.transport.redis", "redis") if m in sys.modules]
print(loaded())
dispatcher.start()
print(loaded())
dispatcher.stop()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.split("\n")[:2] == ["[]", "['kombu.transport.redis', 'redis']"], done
