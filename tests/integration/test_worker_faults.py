"""The server's trouble is retried and never blamed on the image; the image's fault is named.

Storage faults use a real small filesystem (a 4 MB tmpfs, mounted for the test): full, then
read-only, then healthy again. Mounting needs root; elsewhere these tests skip and say so.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips
from sqlalchemy import create_engine, text

from imgq.config import load_settings
from imgq.domain.models import Item, Job
from imgq.domain.status import Status
from imgq.errors import DatabaseUnavailable, InputMissing, OutOfMemory, StorageUnavailable
from imgq.ops import build_registry
from imgq.ops.image import decode, encode_to_file
from imgq.store.repository import utcnow
from imgq.worker.classify import classify
from imgq.worker.execute import execute
from imgq.worker.runtime import Runtime
from imgq.worker.sweeper import sweep, sweep_orphans
from tests.conftest import IN_CI


def noise_png(side: int) -> bytes:
    """Random pixels: a PNG that does not compress, so its size is known in advance."""
    return bytes(pyvips.Image.gaussnoise(side, side).cast("uchar").bandjoin([
        pyvips.Image.gaussnoise(side, side).cast("uchar")] * 2).write_to_buffer(".png"))


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB filesystem of its own, unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        message = f"cannot mount a small tmpfs here: {done.stderr.strip()}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mount
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mount)], capture_output=True)
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def runtime_on(data_dir: Path, storage: Path | None = None, **settings: Any) -> Runtime:
    options: dict[str, Any] = {"data_dir": data_dir, "lease_seconds": 5, "retry_backoff_seconds": 0.05,
                               "max_attempts": 2, **settings}
    if storage is not None:
        options["storage_url"] = storage.as_uri()
    rt = Runtime.from_settings(load_settings(**options), run_migrations=True)
    rt.registry = build_registry()
    return rt


def submit(rt: Runtime, data: bytes, pipeline: list[dict[str, Any]]) -> Item:
    job_id = str(uuid.uuid4())
    src = rt.settings.data_dir / f"upload-{job_id}.png"
    src.write_bytes(data)
    key = f"{job_id}/inputs/0.png"
    rt.blobs.put_file(key, src)
    now = utcnow()
    item = Item(id=str(uuid.uuid4()), job_id=job_id, idx=0, status=Status.queued,
                input_name="photo.png", input_key=key, queued_at=now,
                input_meta={"format": "png", "width": 1, "height": 1, "bytes": len(data)})
    rt.repo.create_job(Job(id=job_id, created_at=now, expires_at=now, pipeline=pipeline,
                           resource="cpu", item_count=1, items=[item]))
    return item


def run_until_done(rt: Runtime, item_id: str, tries: int = 10) -> Item:
    not_before = rt.repo.get_item(item_id).not_before
    if not_before is not None:  # the last retry's delay
        time.sleep(max(0.0, (not_before - utcnow()).total_seconds()) + 0.01)
    for _ in range(tries):
        outcome = execute(rt, item_id)
        if outcome.status != "retry":
            break
        time.sleep((outcome.retry_in or 0) + 0.01)
    return rt.repo.get_item(item_id)


def fill(folder: Path) -> Path:
    """Fill the filesystem of `folder` to the last byte."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_full_storage_is_retried_and_the_image_succeeds_once_space_returns(
    tmp_path: Path, small_fs: Path
) -> None:
    rt = runtime_on(tmp_path, small_fs)
    item = submit(rt, noise_png(300), [{"op": "resize", "width": 600, "enlarge": True}])
    filler = fill(small_fs)

    outcome = execute(rt, item.id)
    assert outcome.status == "retry"
    during = rt.repo.get_item(item.id)
    assert during.status == Status.queued
    assert during.error_code == "storage_full"
    assert "full" in (during.error_message or "") and "decode" not in (during.error_message or "")
    assert during.failures == 0, "a full disk is not the image's fault"
    for _ in range(3):  # more tries than max_attempts: none spends an attempt
        time.sleep((outcome.retry_in or 0) + 0.01)
        outcome = execute(rt, item.id)
        assert outcome.status == "retry"

    filler.unlink()
    done = run_until_done(rt, item.id)
    assert done.status == Status.succeeded, done.error_message
    assert done.failures == 0 and done.attempts == 5
    result = pyvips.Image.new_from_file(str(small_fs / (done.result_key or "")))
    assert (result.width, result.height) == (600, 600)
    rt.close()


def test_read_only_storage_is_retried_at_once_not_after_a_lease(
    tmp_path: Path, small_fs: Path
) -> None:
    rt = runtime_on(tmp_path, small_fs)
    item = submit(rt, noise_png(64), [{"op": "grayscale"}])
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    started = time.monotonic()
    outcome = execute(rt, item.id)
    assert outcome.status == "retry" and time.monotonic() - started < 2.0
    during = rt.repo.get_item(item.id)
    assert (during.status, during.error_code, during.failures) == (
        Status.queued, "storage_read_only", 0)
    assert "read-only" in (during.error_message or "")

    subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    done = run_until_done(rt, item.id)
    assert done.status == Status.succeeded, done.error_message
    assert pyvips.Image.new_from_file(str(small_fs / (done.result_key or ""))).bands == 1
    rt.close()


def test_a_result_not_created_on_read_only_storage_is_its_fault_after_the_disk_is_back(
    small_fs: Path,
) -> None:
    # libvips cannot open the output file: the disk's trouble, whatever the disk is like by
    # the time the worker asks (under load it was writable again, and a good image failed)
    source = small_fs / "in.png"
    source.write_bytes(noise_png(64))
    image = decode(source, "png")
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    try:
        with pytest.raises(OSError) as raised:
            encode_to_file(image, small_fs / "out.png")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    assert raised.value.errno == errno.EROFS
    error = classify(raised.value)
    assert error.code == "storage_read_only" and error.infrastructure, error


def test_a_missing_input_fails_at_once_and_says_so(tmp_path: Path) -> None:
    rt = runtime_on(tmp_path)
    item = submit(rt, noise_png(32), [{"op": "grayscale"}])
    rt.blobs.delete([item.input_key])
    assert execute(rt, item.id).status == "failed"
    failed = rt.repo.get_item(item.id)
    assert failed.error_code == "input_missing" and failed.attempts == 1
    assert "no longer in storage" in (failed.error_message or "")
    rt.close()


def test_a_pipeline_this_worker_cannot_run_fails_at_once_with_the_reason(
    tmp_path: Path
) -> None:
    rt = runtime_on(tmp_path)
    item = submit(rt, noise_png(32), [{"op": "no_such_operation_here"}])
    assert execute(rt, item.id).status == "failed"
    failed = rt.repo.get_item(item.id)
    assert failed.status == Status.failed and failed.error_code == "invalid_pipeline"
    assert "no_such_operation_here" in (failed.error_message or "")
    assert failed.failures == 0 and failed.attempts == 1
    rt.close()


def test_a_truncated_image_is_still_the_images_fault(tmp_path: Path) -> None:
    rt = runtime_on(tmp_path)
    data = noise_png(200)
    item = submit(rt, data[: len(data) // 2], [{"op": "grayscale"}])
    assert execute(rt, item.id).status == "failed"
    failed = rt.repo.get_item(item.id)
    assert failed.error_code == "decode_error" and failed.attempts == 1
    rt.close()


def test_database_trouble_is_retried_and_never_fails_the_image(tmp_path: Path) -> None:
    """The worker's claim and its outcome both go through a database that is not there."""
    rt = runtime_on(tmp_path)
    item = submit(rt, noise_png(32), [{"op": "grayscale"}])
    good_engine = rt.repo.engine
    rt.repo.engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:9/none",
                                   connect_args={"connect_timeout": 1})
    outcome = execute(rt, item.id)
    assert outcome.status == "retry" and outcome.retry_in is not None
    rt.repo.engine.dispose()
    rt.repo.engine = good_engine
    assert rt.repo.get_item(item.id).status == Status.queued
    done = run_until_done(rt, item.id)
    assert done.status == Status.succeeded and done.failures == 0
    rt.close()


def test_causes_are_classified_once() -> None:
    from sqlalchemy.exc import IntegrityError, OperationalError

    try:
        with create_engine("postgresql+psycopg://nobody@127.0.0.1:9/none",
                           connect_args={"connect_timeout": 1}).connect() as conn:
            conn.execute(text("select 1"))
    except OperationalError as exc:
        down = classify(exc)
    assert isinstance(down, DatabaseUnavailable) and down.infrastructure
    bug = classify(IntegrityError("insert", {}, Exception("duplicate key")))
    assert not bug.transient and bug.code == "internal_error"
    for number, words in ((errno.ENOSPC, "full"), (errno.EROFS, "read-only")):
        error = classify(OSError(number, "x"))
        assert isinstance(error, StorageUnavailable) and words in error.message
    assert isinstance(classify(MemoryError()), OutOfMemory)
    assert classify(MemoryError()).transient and not classify(MemoryError()).infrastructure
    assert not classify(InputMissing()).transient
    assert not classify(ValueError("a bug")).transient


def test_s3_trouble_is_the_servers_and_is_retried() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    slow = ClientError({"Error": {"Code": "SlowDown", "Message": "x"}}, "PutObject")
    assert isinstance(classify(slow), StorageUnavailable) and "SlowDown" in classify(slow).message
    assert classify(EndpointConnectionError(endpoint_url="http://s3")).infrastructure


def test_results_no_item_recorded_are_swept_and_a_deleted_job_leaves_no_file(
    tmp_path: Path
) -> None:
    rt = runtime_on(tmp_path)
    item = submit(rt, noise_png(32), [{"op": "grayscale"}])
    assert execute(rt, item.id).status == "succeeded"
    done = rt.repo.get_item(item.id)
    root = tmp_path / "blobs"
    # What a worker killed between storing and recording leaves: a result nobody recorded.
    stray = root / item.job_id / "results" / "0-deadbeef.png"
    stray.write_bytes(b"x")
    fresh = root / item.job_id / "results" / "0-cafecafe.png"  # being recorded right now
    fresh.write_bytes(b"y")
    old = time.time() - 3600
    os.utime(stray, (old, old))
    assert sweep_orphans(rt) == 1
    assert not stray.exists() and fresh.exists()
    assert (root / (done.result_key or "")).exists(), "the recorded result stays"

    report = sweep(rt)  # the job has expired (expires_at is its creation)
    assert report.expired_jobs == [item.job_id]
    assert not (root / item.job_id).exists(), "every file under the job is gone"
    rt.close()
