"""Outages of the database and the storage while `imgq serve` works through a batch: every good
image succeeds once the fault ends, none is blamed for it, and none spends its attempts.

Each test starts its own PostgreSQL or filesystem and breaks it; the shared services are never
touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyvips

from tests.fixtures.encoded import big_png
from tests.fixtures.outages import own_postgres, remount, small_filesystem
from tests.fixtures.server import Server

#: Each item takes a few tenths of a second (a 2000×2000 PNG from a small upload).
SLOW = "resize:width=2000,enlarge=true|encode:format=png"
ITEMS = 10
FAULT_SECONDS = 8.0  # longer than the lease below
FAST_FAILOVER = {"workers": 2, "lease_seconds": 3, "retry_backoff_seconds": 0.2,
                 "queue_sweep_interval_seconds": 1}


def submit_batch(server: Server) -> str:
    image = big_png(300, 300)
    return str(server.submit_ok([(f"img{n}.png", image) for n in range(ITEMS)], SLOW)["id"])


def wait_until_running(server: Server, job_id: str) -> None:
    server.wait_job(job_id, lambda j: j["counts"].get("running", 0) > 0
                    or j["counts"].get("succeeded", 0) > 0, timeout=60, what="work started")


def assert_all_good(server: Server, job_id: str) -> dict[str, Any]:
    job = server.wait_finished(job_id, timeout=180)
    assert job["counts"] == {"succeeded": ITEMS}, [
        (i["index"], i["status"], i["error"]) for i in job["items"] if i["status"] != "succeeded"]
    for item in job["items"][:3]:
        result = server.client.get(item["result_url"])
        assert result.status_code == 200
        image = pyvips.Image.new_from_buffer(result.content, "")
        assert (image.width, image.height) == (2000, 2000)
    return job


def test_a_database_down_longer_than_a_lease_fails_no_good_image(
    serve: Callable[..., Server],
) -> None:
    with own_postgres() as db:
        server = serve(database_url=db.url, **FAST_FAILOVER)
        job_id = submit_batch(server)
        wait_until_running(server, job_id)
        db.stop()
        time.sleep(FAULT_SECONDS)
        db.start()
        assert_all_good(server, job_id)
        log = server.log_text()
        assert "worker_lost" not in log and "internal error" not in log


def test_connections_cut_again_and_again_while_results_are_recorded(
    serve: Callable[..., Server],
) -> None:
    with own_postgres() as db:
        server = serve(database_url=db.url, **FAST_FAILOVER)
        job_id = submit_batch(server)
        wait_until_running(server, job_id)
        cut = 0
        end = time.monotonic() + FAULT_SECONDS
        while time.monotonic() < end:  # a failover storm: every connection cut, again and again
            cut += db.cut_connections()
            time.sleep(0.3)
        assert cut > 0, "the storm cut no connection"
        assert_all_good(server, job_id)
        assert "internal error" not in server.log_text()


def test_storage_read_only_longer_than_a_lease_fails_no_good_image(
    serve: Callable[..., Server], tmp_path: Path,
) -> None:
    with small_filesystem(tmp_path / "storage") as storage:
        server = serve(storage_url=storage.as_uri(), min_free_bytes=0, **FAST_FAILOVER)
        job_id = submit_batch(server)
        wait_until_running(server, job_id)
        remount(storage, read_only=True)
        time.sleep(FAULT_SECONDS)
        remount(storage, read_only=False)
        assert_all_good(server, job_id)
        log = server.log_text()
        assert "worker_lost" not in log and "decode_error" not in log
