"""The Celery task a fleet worker runs for each message, called in this process on SQLite: a
message for an item that this process already ran to its end costs no claim."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips

from imgq.config import load_settings
from imgq.dispatch import celery_app
from imgq.domain.access import SYSTEM
from imgq.domain.models import Item, Job
from imgq.domain.status import Status
from imgq.store.repository import utcnow
from imgq.worker.runtime import Runtime

PIPELINE = [{"op": "grayscale", "params": {}}, {"op": "encode", "params": {"format": "png"}}]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Any]:
    settings = load_settings(data_dir=tmp_path, log_level="WARNING",
                             broker_url="redis://127.0.0.1:1/0")  # never reached here
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
