"""Status reads for pollers: ETags and 304s on a job and on ?ids= lists, and an answer kept in
memory that never hides a change made through the same server."""

from __future__ import annotations

from collections.abc import Callable

import pyvips

from tests.fixtures.encoded import png_bytes
from tests.fixtures.server import Server


def test_a_poller_gets_304_until_the_job_changes_then_the_new_state(
        serve: Callable[..., Server]) -> None:
    server = serve()
    job = server.submit_ok([("a.png", png_bytes(64, 48, seed=1))], "grayscale")
    done = server.wait_finished(job["id"])
    first = server.client.get(f"/v1/jobs/{job['id']}")
    etag = first.headers["ETag"]
    assert first.json() == done and done["status"] == "succeeded"
    again = server.client.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": etag})
    assert (again.status_code, again.content, again.headers["ETag"]) == (304, b"", etag)
    listed = server.client.get("/v1/jobs", params={"ids": job["id"]})
    assert listed.json()["jobs"] == [done] and listed.json()["total"] == 1
    unchanged = server.client.get("/v1/jobs", params={"ids": job["id"]},
                                  headers={"If-None-Match": listed.headers["ETag"]})
    assert unchanged.status_code == 304

    server.client.delete(f"/v1/jobs/{job['id']}")  # a change through this server shows at once
    assert server.client.get(f"/v1/jobs/{job['id']}",
                             headers={"If-None-Match": etag}).status_code == 404
    gone = server.client.get("/v1/jobs", params={"ids": job["id"]},
                             headers={"If-None-Match": listed.headers["ETag"]})
    assert gone.status_code == 200 and gone.json()["jobs"] == []


def test_the_etag_changes_with_progress_and_the_body_follows(serve: Callable[..., Server]) -> None:
    server = serve(workers=1)
    job = server.submit_ok([("a.png", png_bytes(64, 48, seed=2))], "grayscale|encode:format=webp")
    seen = server.client.get(f"/v1/jobs/{job['id']}")
    done = server.wait_finished(job["id"])
    fresh = server.client.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": seen.headers["ETag"]})
    if seen.json()["status"] != "succeeded":
        assert fresh.status_code == 200 and fresh.headers["ETag"] != seen.headers["ETag"]
        assert fresh.json() == done
    result = server.client.get(done["items"][0]["result_url"])
    image = pyvips.Image.new_from_buffer(result.content, "")
    assert (image.width, image.height, image.get("vips-loader")) == (64, 48, "webpload_buffer")


def test_a_cancel_shows_at_once_to_a_poller_of_the_same_server(
        serve: Callable[..., Server]) -> None:
    server = serve(status_cache_seconds=10, workers=1)
    files = [(f"{n}.png", png_bytes(300, 200, seed=n)) for n in range(4)]
    job = server.submit_ok(files, "blur:radius=4")
    before = server.client.get(f"/v1/jobs/{job['id']}").json()
    assert before["cancel_requested"] is False
    server.client.post(f"/v1/jobs/{job['id']}/cancel")
    after = server.client.get(f"/v1/jobs/{job['id']}").json()  # inside the 10 s of memory
    assert after["cancel_requested"] is True
