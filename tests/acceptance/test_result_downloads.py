"""Result downloads: a small result is answered whole from one read of its file, a large one
streams; both give the stored bytes exactly, with their type, length and file name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyvips

from imgq.api.archive import WHOLE_RESULT_BYTES
from tests.fixtures.encoded import png_bytes
from tests.fixtures.server import Server


def _stored_result(server: Server, job_id: str, index: int) -> bytes:
    found = list((server.data_dir / "blobs" / job_id / "results").glob(f"{index}-*"))
    assert len(found) == 1, found
    return Path(found[0]).read_bytes()


def _noise_png(width: int, height: int) -> bytes:
    """Random pixels, which PNG cannot shrink: a result larger than WHOLE_RESULT_BYTES."""
    noise = pyvips.Image.gaussnoise(width, height, sigma=80, mean=128, seed=7)
    image = noise.bandjoin([noise.rot180(), noise.fliphor()]).cast("uchar")
    return bytes(image.copy(interpretation="srgb").pngsave_buffer(compression=1))


def test_small_and_large_results_are_the_stored_bytes_with_their_headers(
        serve: Callable[..., Server]) -> None:
    server = serve(workers=1)
    job = server.submit_ok([("small.png", png_bytes(64, 48, seed=3)),
                            ("large.png", _noise_png(900, 700))], "encode:format=png")
    done = server.wait_finished(job["id"])
    assert done["status"] == "succeeded", done
    small, large = (_stored_result(server, job["id"], i) for i in (0, 1))
    assert len(small) < WHOLE_RESULT_BYTES < len(large)
    for item, stored in zip(done["items"], (small, large)):
        response = server.client.get(item["result_url"])
        assert response.status_code == 200, response.text
        assert response.content == stored
        assert response.headers["content-type"] == "image/png"
        assert response.headers["content-length"] == str(len(stored))
        assert f'filename="{item["result_name"]}"' in response.headers["content-disposition"]
        assert response.headers["x-content-type-options"] == "nosniff"  # the security headers


def test_a_result_not_made_yet_or_of_no_item_is_refused_in_json(
        serve: Callable[..., Server]) -> None:
    server = serve("--no-workers")  # nothing runs: the item stays queued
    job = server.submit_ok([("a.png", png_bytes(32, 24))], "grayscale")
    queued = server.client.get(f"/v1/jobs/{job['id']}/items/0/result")
    assert queued.status_code == 409, queued.text
    assert queued.json()["error"]["code"] and "queued" in queued.json()["error"]["message"]
    missing = server.client.get(f"/v1/jobs/{job['id']}/items/5/result")
    assert missing.status_code == 404 and "has no item 5" in missing.json()["error"]["message"]
    other = server.client.get("/v1/jobs/no-such-job/items/0/result")
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
