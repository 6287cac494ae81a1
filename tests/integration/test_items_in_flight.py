"""An AI worker process runs several items at once (IMGQ_AI_ITEMS_IN_FLIGHT), each claimed,
run, stored and failed on its own, their model tiles in shared batches."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvips

from imgq.config import load_settings
from imgq.domain.models import Item, Job
from imgq.domain.status import Status
from imgq.errors import TransientError
from imgq.ops.base import NoParams, Operation, StepContext
from imgq.ops.image import Image
from imgq.store.repository import utcnow
from imgq.worker.execute import drain_concurrently
from imgq.worker.runtime import Runtime, items_in_flight

from .ai._support import require_torch, scene

require_torch()

from imgq.ai.upscale import upscale_array  # noqa: E402

MODEL = "dat-light-x2"  # runs on torch on a CPU too, so its tiles go through the batcher


class Meet(Operation):
    """A gpu step that finishes only when another item runs it at the same time."""

    name = "meet"
    summary = "test"
    resource = "gpu"
    concurrent = True
    barrier = threading.Barrier(2)

    def apply(self, image: Image, params: NoParams, ctx: StepContext) -> Image:
        type(self).barrier.wait(timeout=30)
        return image


class Alone(Operation):
    """A gpu step that does not say it may run twice at once: it notes whether another item
    came into it while it was there."""

    name = "alone"
    summary = "test"
    resource = "gpu"
    barrier = threading.Barrier(2)
    seen: list[str] = []

    def apply(self, image: Image, params: NoParams, ctx: StepContext) -> Image:
        try:
            type(self).barrier.wait(timeout=2)
            type(self).seen.append("together")
        except threading.BrokenBarrierError:
            type(self).seen.append("alone")
        return image


class Hiccup(Operation):
    """A gpu step whose storage has a hiccup every time."""

    name = "hiccup"
    summary = "test"
    resource = "gpu"
    concurrent = True

    def apply(self, image: Image, params: NoParams, ctx: StepContext) -> Image:
        raise TransientError("storage hiccup")


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    settings = load_settings(data_dir=tmp_path, ai_device="cpu", ai_items_in_flight=2,
                             ai_measure_on_start=False, item_time_limit_seconds=120,
                             retry_backoff_seconds=30.0)
    runtime = Runtime.from_settings(settings, run_migrations=True)
    runtime.registry.add(Meet())
    runtime.registry.add(Alone())
    runtime.registry.add(Hiccup())
    Meet.barrier, Alone.barrier, Alone.seen = threading.Barrier(2), threading.Barrier(2), []
    yield runtime
    runtime.close()


def submit(rt: Runtime, pipeline: list[dict[str, Any]], data: bytes) -> Item:
    job_id = str(uuid.uuid4())
    key = f"{job_id}/inputs/0.png"
    src = rt.settings.data_dir / f"upload-{job_id}.png"
    src.write_bytes(data)
    rt.blobs.put_file(key, src)
    now = utcnow()
    item = Item(id=str(uuid.uuid4()), job_id=job_id, idx=0, status=Status.queued,
                input_name="photo.png", input_key=key, queued_at=now,
                input_meta={"format": "png", "width": 48, "height": 40, "bytes": len(data)})
    rt.repo.create_job(Job(id=job_id, created_at=now, expires_at=now, pipeline=pipeline,
                           resource="gpu", item_count=1, items=[item]))
    return item


def png(array: np.ndarray) -> bytes:
    return bytes(pyvips.Image.new_from_array(array, interpretation="srgb").write_to_buffer(".png"))


def test_the_setting_applies_to_ai_items_only(rt: Runtime) -> None:
    assert items_in_flight(rt.settings, "gpu") == 2
    assert items_in_flight(rt.settings, "cpu") == 1
    on_cpu = load_settings(data_dir=rt.settings.data_dir, ai_device="cpu")
    assert items_in_flight(on_cpu, "gpu") == 1  # auto: one item fills a CPU's cores


def test_two_ai_items_run_at_the_same_time_in_one_process(rt: Runtime) -> None:
    image = png(scene(40, 48, seed=1))
    items = [submit(rt, [{"op": "meet"}], image) for _ in range(2)]
    drained = drain_concurrently(rt, "gpu", items_in_flight(rt.settings, "gpu"))
    assert drained.items == 2
    # Each waited for the other inside its step: run one after the other, both would fail.
    assert [rt.repo.get_item(i.id).status for i in items] == [Status.succeeded] * 2


def test_every_item_that_ran_side_by_side_and_waits_for_a_retry_is_woken(rt: Runtime) -> None:
    image = png(scene(40, 48, seed=1))
    items = {submit(rt, [{"op": "hiccup"}], image).id for _ in range(2)}
    drained = drain_concurrently(rt, "gpu", 2)
    assert drained.items == 2
    woken = {drained.retry_item, *(item for item, _ in drained.later)}
    assert woken == items  # not only the soonest: the dispatcher wakes each at its time
    assert drained.retry_in is not None and all(delay > 0 for _, delay in drained.later)


def test_a_gpu_step_not_made_for_it_runs_for_one_item_at_a_time(rt: Runtime) -> None:
    image = png(scene(40, 48, seed=1))
    items = [submit(rt, [{"op": "alone"}], image) for _ in range(2)]
    assert drain_concurrently(rt, "gpu", 2).items == 2
    assert [rt.repo.get_item(i.id).status for i in items] == [Status.succeeded] * 2
    assert Alone.seen == ["alone", "alone"]  # the second came in after the first had left


def test_upscales_in_flight_give_each_its_own_pixels_and_a_broken_one_fails_alone(
        rt: Runtime) -> None:
    images = [scene(40, 48, seed=2), scene(40, 48, seed=3)]
    upscale = [{"op": "upscale", "model": MODEL, "scale": 2, "tile": 0}]
    good = [submit(rt, upscale, png(image)) for image in images]
    whole = png(scene(40, 48, seed=4))
    broken = submit(rt, upscale, whole[: len(whole) // 2])
    # A budget long enough for all three on a loaded machine (loading the model included).
    drained = drain_concurrently(rt, "gpu", items_in_flight(rt.settings, "gpu"), budget=120)
    assert drained.items == 3
    for item, image in zip(good, images, strict=True):
        done = rt.repo.get_item(item.id)
        assert done.status == Status.succeeded and done.result_key
        with rt.blobs.open_local(done.result_key) as path:
            out = pyvips.Image.new_from_file(str(path)).numpy()
        expected = upscale_array(image, MODEL, device="cpu")
        assert out.shape == (80, 96, 3)
        assert np.abs(out.astype(np.int16) - expected).max() <= 1
    failed = rt.repo.get_item(broken.id)
    assert failed.status == Status.failed and failed.error_code == "decode_error"
