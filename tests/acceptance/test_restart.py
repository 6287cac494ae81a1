"""Work survives the server: queued items run after a restart, and an item whose server was
killed while it ran is requeued when its lease runs out and finishes exactly once."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from tests.fixtures.encoded import big_png, image_info, jpeg_bytes, png_bytes
from tests.fixtures.server import Server


def test_queued_work_is_done_after_a_restart(serve: Callable[..., Server]) -> None:
    server = serve("--no-workers")
    first = server.submit_ok([("a.jpg", jpeg_bytes(seed=1)), ("b.png", png_bytes(seed=2)),
                              ("c.png", png_bytes(alpha=True, seed=3))],
                             "grayscale|resize:width=50")
    second = server.submit_ok([("d.jpg", jpeg_bytes(seed=4))], "encode:format=webp")
    time.sleep(1.5)  # the sweeper runs at start; without workers nothing may run
    listed = server.client.get("/v1/jobs", params={"ids": f"{second['id']},{first['id']}"})
    assert [j["id"] for j in listed.json()["jobs"]] == [second["id"], first["id"]]
    newest_first = server.client.get("/v1/jobs").json()
    assert newest_first["total"] == 2
    assert [j["id"] for j in newest_first["jobs"]] == [second["id"], first["id"]]
    for job_id in (first["id"], second["id"]):
        job = server.job(job_id)
        assert job["status"] == "queued"
        assert all(i["status"] == "queued" and i["attempts"] == 0 for i in job["items"])
    # A graceful stop; uvicorn re-raises the SIGTERM once shut down, so either status is clean.
    assert server.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log_text()

    server.start(workers=2)
    for job_id, fmt in ((first["id"], None), (second["id"], "webp")):
        job = server.wait_finished(job_id, timeout=30)
        assert job["status"] == "succeeded", job
        for item in job["items"]:
            assert item["attempts"] == 1
            download = server.client.get(item["result_url"])
            assert download.status_code == 200
            got_fmt, width, _, _ = image_info(download.content)
            assert got_fmt == (fmt or item["input"]["format"])
            assert width == (50 if fmt is None else item["input"]["width"])


def test_an_item_killed_while_running_finishes_exactly_once_after_a_restart(
    serve: Callable[..., Server],
) -> None:
    settings = {"workers": 1, "lease_seconds": 2}
    server = serve(**settings)
    # About a second of work here: enlarging to 36 megapixels, then PNG encoding. (A large
    # blur would be slower still, but libvips' sequential PNG reader can then fail with "out
    # of order read", now and then.)
    job_id = server.submit_ok([("big.png", big_png(1000, 1000))],
                              "resize:width=6000,enlarge=true|encode:format=png")["id"]
    results = server.data_dir / "blobs" / job_id / "results"
    server.wait_job(job_id, lambda j: j["items"][0]["status"] == "running", timeout=30,
                    what="the item running")
    server.kill()  # SIGKILL to the server and its worker processes, mid-item

    server.start(**settings)
    item = server.job(job_id)["items"][0]
    assert item["status"] in ("running", "queued"), f"the kill came too late: {item}"
    assert item["attempts"] == 1
    job = server.wait_finished(job_id, timeout=60)
    item = job["items"][0]
    assert item["status"] == "succeeded", item
    assert item["attempts"] == 2
    assert server.log_text().count(f"item {item['id']}: succeeded in") == 1
    stored = sorted(p.name for p in results.iterdir())
    assert len(stored) == 1, f"expected exactly one result file, found {stored}"
    download = server.client.get(item["result_url"])
    assert download.status_code == 200
    assert image_info(download.content)[:3] == ("png", 6000, 6000)
