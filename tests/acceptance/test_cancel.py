"""Cancelling a job: queued items never run, finished items keep their results."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable

from tests.fixtures.encoded import big_png
from tests.fixtures.server import Server

# Enlarging makes each item take a few tenths of a second (the output is 3000×3000) from a
# small upload. (Not a large blur: see test_restart.py.)
SLOW = "resize:width=3000,enlarge=true|encode:format=png"


def test_cancel_stops_queued_items_and_keeps_finished_results(
    serve: Callable[..., Server],
) -> None:
    server = serve(workers=1)
    image = big_png(600, 600)
    submitted = server.submit_ok([(f"img{n}.png", image) for n in range(10)], SLOW)
    job_id = submitted["id"]
    server.wait_job(job_id, lambda j: j["counts"].get("succeeded", 0) >= 1, timeout=30,
                    what="a first item succeeded")

    response = server.client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    at_cancel = {i["index"]: i for i in response.json()["items"]}
    assert response.json()["cancel_requested"] is True
    done_before = {n for n, i in at_cancel.items() if i["status"] == "succeeded"}
    cancelled_queued = {n for n, i in at_cancel.items() if i["status"] == "cancelled"}
    assert done_before, "the first finished item should be in the answer"
    assert len(cancelled_queued) >= 4, f"items should still have been queued: {at_cancel}"
    assert not any(i["status"] == "queued" for i in at_cancel.values())

    server.wait_finished(job_id, timeout=30)
    time.sleep(1.0)  # let the worker pool reach the cancelled items it was handed
    job = server.job(job_id)
    for item in job["items"]:
        n = item["index"]
        if n in cancelled_queued:
            assert item["status"] == "cancelled"
            assert item["attempts"] == 0, f"cancelled item {n} ran"
            assert item["timings"]["started_at"] is None
            assert item["error"]["code"] == "cancelled"
            assert item["result_url"] is None
        elif n in done_before:
            assert item["status"] == "succeeded"
            download = server.client.get(item["result_url"])
            assert download.status_code == 200
            assert download.headers["content-type"] == "image/png"
        else:  # it was running at the cancel: it stops at its next step, or had finished
            assert item["status"] in ("cancelled", "succeeded"), item
            assert item["attempts"] == 1

    counts = job["counts"]
    assert counts.get("cancelled", 0) >= len(cancelled_queued)
    assert counts.get("succeeded", 0) >= len(done_before)
    assert set(counts) <= {"succeeded", "cancelled"}
    # The job's state follows from its items: some succeeded, the rest did not run.
    assert job["status"] == "partial", job["status"]
    assert job["cancel_requested"] is True

    archive = server.client.get(job["urls"]["archive"])
    assert archive.status_code == 200
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zf:
        assert len(zf.namelist()) == counts["succeeded"]
    again = server.client.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 200 and again.json()["counts"] == counts
