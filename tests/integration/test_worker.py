"""The worker's execute(): claim → run → store → finish, retries, cancel, time limit, sweeper."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import pyvips

from imgq.config import load_settings
from imgq.domain.access import SYSTEM
from imgq.domain.models import Claim, Item, Job
from imgq.domain.status import JobStatus, Status
from imgq.errors import TransientError
from imgq.ops import build_registry
from imgq.ops.base import BoundStep, NoParams, Operation, Registry, StepContext
from imgq.ops.image import Image
from imgq.store.repository import utcnow
from imgq.domain.retry import backoff
from imgq.worker.execute import drain, execute
from imgq.worker.hooks import Hooks, ItemHooks
from imgq.worker.runtime import Runtime
from imgq.worker.sweeper import sweep


class Flaky(Operation):
    """Fails transiently the first `failures` times it runs."""

    name = "flaky"
    summary = "test"
    failures: ClassVar[int] = 0
    calls: ClassVar[int] = 0

    def apply(self, image: Image, params: NoParams, ctx: StepContext) -> Image:
        type(self).calls += 1
        if type(self).calls <= type(self).failures:
            raise TransientError("storage hiccup")
        return image


class Slow(Operation):
    """Takes a while, asking between its slices whether to stop (as tiled AI steps do)."""

    name = "slow"
    summary = "test"
    started = threading.Event()

    def apply(self, image: Image, params: NoParams, ctx: StepContext) -> Image:
        type(self).started.set()
        for i in range(200):
            ctx.check()
            ctx.progress(i / 200, f"slice {i + 1}/200")
            time.sleep(0.01)
        return image


class Costly(Operation):
    """An image below MONITOR_PIXELS that takes libvips seconds to compute (noise under a
    wide blur): the work is all done by the encoder, with no step left to look at a cancel."""

    name = "costly"
    summary = "test"

    def apply(self, image: Image, params: NoParams, ctx: StepContext) -> Image:
        return image.with_vips(pyvips.Image.gaussnoise(1500, 1500).gaussblur(100).cast("uchar"))


class Broken(Operation):
    name = "broken"
    summary = "test"

    def apply(self, image: Image, params: NoParams, ctx: StepContext) -> Image:
        raise ValueError("a bug")


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    settings = load_settings(data_dir=tmp_path, lease_seconds=5, retry_backoff_seconds=0.05,
                             max_attempts=3, item_time_limit_seconds=30)
    runtime = Runtime.from_settings(settings, run_migrations=True)
    registry = Registry()
    for op in build_registry():
        registry.add(op)
    for op in (Flaky(), Slow(), Costly(), Broken()):
        registry.add(op)
    runtime.registry = registry
    Flaky.calls, Flaky.failures = 0, 0
    Slow.started.clear()
    yield runtime
    runtime.close()


def submit(rt: Runtime, pipeline: list[dict[str, Any]], data: bytes | None = None,
           count: int = 1) -> Job:
    job_id = str(uuid.uuid4())
    src = rt.settings.data_dir / f"upload-{job_id}"
    if data is None:
        pyvips.Image.black(32, 24, bands=3).write_to_file(str(src) + ".png")
        src = Path(str(src) + ".png")
    else:
        src.write_bytes(data)
    key = f"{job_id}/inputs/0.png"
    rt.blobs.put_file(key, src)
    now = utcnow()
    job_items = [Item(id=str(uuid.uuid4()), job_id=job_id, idx=idx, status=Status.queued,
                      input_name="photo.png", input_key=key, queued_at=now,
                      input_meta={"format": "png", "width": 32, "height": 24, "bytes": 1})
                 for idx in range(count)]
    job = Job(id=job_id, created_at=now, expires_at=now, pipeline=pipeline, resource="cpu",
              item_count=count, items=job_items)
    rt.repo.create_job(job)
    return job


def test_an_item_runs_to_a_stored_result(rt: Runtime) -> None:
    job = submit(rt, [{"op": "grayscale"}])
    assert execute(rt, job.items[0].id).status == "succeeded"
    item = rt.repo.get_item(job.items[0].id)
    assert item.status == Status.succeeded and item.result_key
    assert rt.blobs.exists(item.result_key)
    assert item.result_meta == {"format": "png", "width": 32, "height": 24, "frames": 1,
                                "bytes": rt.blobs.size(item.result_key)}


def test_a_duplicate_message_does_nothing(rt: Runtime) -> None:
    job = submit(rt, [{"op": "grayscale"}])
    execute(rt, job.items[0].id)
    assert execute(rt, job.items[0].id).status == "skipped"
    assert rt.repo.get_item(job.items[0].id).attempts == 1


def test_a_transient_error_is_retried_after_a_backoff(rt: Runtime) -> None:
    rt.settings = rt.settings.model_copy(update={"retry_backoff_seconds": 1.0})
    Flaky.failures = 1
    job = submit(rt, [{"op": "flaky"}])
    first = execute(rt, job.items[0].id)
    assert first.status == "retry" and first.retry_in is not None
    item = rt.repo.get_item(job.items[0].id)
    assert item.status == Status.queued and item.not_before is not None
    assert execute(rt, job.items[0].id).status == "skipped"  # not due yet
    time.sleep(first.retry_in + 0.01)
    assert execute(rt, job.items[0].id).status == "succeeded"
    assert rt.repo.get_item(job.items[0].id).attempts == 2


def test_transient_errors_fail_the_item_after_the_attempt_limit(rt: Runtime) -> None:
    Flaky.failures = 99
    job = submit(rt, [{"op": "flaky"}])
    for _ in range(3):
        outcome = execute(rt, job.items[0].id)
        if outcome.retry_in:
            time.sleep(outcome.retry_in + 0.01)
    item = rt.repo.get_item(job.items[0].id)
    assert item.status == Status.failed and item.attempts == 3
    assert "gave up after 3 attempts" in (item.error_message or "")


def test_an_undecodable_image_fails_at_once_with_a_clear_error(rt: Runtime) -> None:
    good = pyvips.Image.black(64, 64, bands=3).write_to_buffer(".png")
    job = submit(rt, [{"op": "grayscale"}], data=good[: len(good) // 2])
    assert execute(rt, job.items[0].id).status == "failed"
    item = rt.repo.get_item(job.items[0].id)
    assert item.attempts == 1 and item.error_code == "decode_error"
    assert "cannot" in (item.error_message or "")


def test_a_bug_in_an_operation_fails_the_item_without_leaking_details(rt: Runtime) -> None:
    job = submit(rt, [{"op": "broken"}])
    assert execute(rt, job.items[0].id).status == "failed"
    item = rt.repo.get_item(job.items[0].id)
    assert item.error_code == "internal_error" and "a bug" not in (item.error_message or "")


def test_cancel_stops_a_running_item_at_its_next_check(rt: Runtime) -> None:
    job = submit(rt, [{"op": "slow"}, {"op": "grayscale"}])
    result: list[str] = []
    worker = threading.Thread(target=lambda: result.append(execute(rt, job.items[0].id).status))
    worker.start()
    assert Slow.started.wait(5)
    rt.repo.cancel_job(job.id, scope=SYSTEM)
    worker.join(10)
    assert result == ["cancelled"]
    assert rt.repo.get_job(job.id, scope=SYSTEM).status == JobStatus.cancelled


def test_the_time_limit_fails_a_long_item(rt: Runtime) -> None:
    rt.settings = rt.settings.model_copy(update={"item_time_limit_seconds": 0.3})
    job = submit(rt, [{"op": "slow"}])
    assert execute(rt, job.items[0].id).status == "failed"
    item = rt.repo.get_item(job.items[0].id)
    assert item.error_code == "time_limit" and "time limit of 0.3 s" in (item.error_message or "")


def test_the_time_limit_stops_libvips_computing_a_small_image(rt: Runtime) -> None:
    # A small final image is computed without libvips' progress callbacks; the heartbeat
    # thread stops its computation.
    rt.settings = rt.settings.model_copy(update={"item_time_limit_seconds": 0.3})
    job = submit(rt, [{"op": "costly"}, {"op": "encode", "format": "png"}])
    assert execute(rt, job.items[0].id).status == "failed"
    item = rt.repo.get_item(job.items[0].id)
    assert item.error_code == "time_limit"


def test_progress_and_stage_are_reported_while_running(rt: Runtime) -> None:
    job = submit(rt, [{"op": "slow"}])
    seen: set[str] = set()
    worker = threading.Thread(target=execute, args=(rt, job.items[0].id))
    worker.start()
    while worker.is_alive():
        item = rt.repo.get_item(job.items[0].id)
        if item.status == Status.running and item.stage:
            seen.add(item.stage)
        time.sleep(0.05)
    assert any(s.startswith("slice ") for s in seen)


def test_backoff_grows_and_has_jitter() -> None:
    draws = [backoff(3, 1.0) for _ in range(50)]
    assert all(2.0 <= d <= 4.0 for d in draws) and len(set(draws)) > 1
    assert backoff(1, 1.0) <= 1.0


def test_the_sweeper_expires_jobs_and_removes_their_files(rt: Runtime) -> None:
    job = submit(rt, [{"op": "grayscale"}])
    execute(rt, job.items[0].id)
    item = rt.repo.get_item(job.items[0].id)
    report = sweep(rt)
    assert report.expired_jobs == [job.id]
    assert not rt.blobs.exists(item.input_key) and not rt.blobs.exists(item.result_key or "")
    assert rt.repo.get_job(job.id, scope=SYSTEM).data_removed


def test_a_drain_runs_every_due_item_of_its_queue_to_its_result(rt: Runtime) -> None:
    jobs = [submit(rt, [{"op": "grayscale"}]) for _ in range(4)]
    drained = drain(rt, "cpu")
    assert (drained.items, drained.more, drained.retry_item) == (4, False, None)
    for job in jobs:
        item = rt.repo.get_item(job.items[0].id)
        assert item.status == Status.succeeded and item.result_key
        assert rt.blobs.size(item.result_key) == item.result_meta["bytes"]  # type: ignore[index]
        with rt.blobs.open_local(item.result_key) as path:
            assert pyvips.Image.new_from_file(str(path)).bands == 1  # grayscale was applied
    assert drain(rt, "cpu").items == 0


def test_a_jobs_pipeline_is_restored_once_for_all_its_items(rt: Runtime) -> None:
    restored: list[int] = []

    class Counting(Registry):
        def restore(self, stored: list[dict[str, Any]]) -> list[BoundStep]:
            restored.append(len(stored))
            return super().restore(stored)

    counting = Counting()
    for op in rt.registry:
        counting.add(op)
    rt.registry = counting
    job = submit(rt, [{"op": "grayscale"}, {"op": "flip"}], count=3)
    other = submit(rt, [{"op": "grayscale"}])
    assert drain(rt, "cpu").items == 4
    assert restored == [2, 1]
    assert all(i.status == Status.succeeded for i in rt.repo.get_job(job.id, scope=SYSTEM).items)
    assert rt.repo.get_item(other.items[0].id).status == Status.succeeded


def test_a_drain_stops_at_a_retry_and_names_the_item_to_wake(rt: Runtime) -> None:
    Flaky.failures = 1
    flaky = submit(rt, [{"op": "flaky"}])
    later = submit(rt, [{"op": "grayscale"}])
    drained = drain(rt, "cpu")
    assert drained.items == 1 and drained.more
    assert drained.retry_item == flaky.items[0].id and drained.retry_in is not None
    assert rt.repo.get_item(later.items[0].id).status == Status.queued
    time.sleep(drained.retry_in + 0.01)
    assert drain(rt, "cpu").items == 2
    assert rt.repo.get_job(flaky.id, scope=SYSTEM).status == JobStatus.succeeded


def test_a_drain_stops_taking_items_when_its_time_is_spent(rt: Runtime) -> None:
    for _ in range(3):
        submit(rt, [{"op": "grayscale"}])
    drained = drain(rt, "cpu", budget=0.0)
    assert (drained.items, drained.more) == (1, True)
    assert drain(rt, "cpu").items == 2


def test_a_pipeline_this_worker_cannot_run_fails_at_once_saying_why(rt: Runtime) -> None:
    job = submit(rt, [{"op": "grayscale"}, {"op": "no_such_operation"}])
    assert execute(rt, job.items[0].id).status == "failed"
    item = rt.repo.get_item(job.items[0].id)
    assert item.status == Status.failed and item.attempts == 1
    assert "unknown operation 'no_such_operation'" in (item.error_message or "")


def test_a_job_queued_with_an_alias_before_normalisation_still_runs(rt: Runtime) -> None:
    job = submit(rt, [{"op": "encode", "format": "jpg"}])
    assert execute(rt, job.items[0].id).status == "succeeded"
    assert rt.repo.get_item(job.items[0].id).result_meta["format"] == "jpeg"


class Recorder(ItemHooks):
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def started(self, claim: Claim) -> None:
        self.calls.append(("started", claim.item.id))

    def step(self, claim: Claim, index: int, name: str) -> None:
        self.calls.append(("step", str(index), name))

    def ended(self, claim: Claim, outcome: str, note: str = "") -> None:
        self.calls.append(("ended", outcome))


class Raising(ItemHooks):
    def started(self, claim: Claim) -> None:
        raise RuntimeError("a broken hook")


def test_hooks_see_an_items_life_and_a_broken_hook_does_not_fail_it(rt: Runtime) -> None:
    recorder = Recorder()
    rt.hooks = Hooks(Raising(), recorder)
    job = submit(rt, [{"op": "grayscale"}, {"op": "flip"}])
    assert execute(rt, job.items[0].id).status == "succeeded"
    assert recorder.calls[0] == ("started", job.items[0].id)
    assert [c[2] for c in recorder.calls if c[0] == "step"][:2] == ["grayscale", "flip"]
    assert recorder.calls[-1] == ("ended", "succeeded")


def test_hooks_hear_of_a_cancelled_item(rt: Runtime) -> None:
    recorder = Recorder()
    rt.hooks = recorder
    job = submit(rt, [{"op": "slow"}])
    worker = threading.Thread(target=execute, args=(rt, job.items[0].id))
    worker.start()
    assert Slow.started.wait(10)
    rt.repo.cancel_job(job.id, scope=SYSTEM)
    worker.join(30)
    assert recorder.calls[-1] == ("ended", "cancelled")
