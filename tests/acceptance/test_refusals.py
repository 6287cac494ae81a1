"""Bad inputs: refused at upload with a 4xx naming the file and the limit, or, when only the
worker can tell, a failed item beside items that still succeed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.encoded import bomb_png, jpeg_bytes, png_bytes, truncated_jpeg
from tests.fixtures.server import Server


def _stored(server: Server) -> tuple[int, list[Path]]:
    """What the server holds: its jobs, and its stored files (the shared server's earlier
    jobs are all finished)."""
    return server.jobs_total(), server.stored_files()


def _assert_nothing_stored(server: Server, before: tuple[int, list[Path]]) -> None:
    assert _stored(server) == before
    assert server.staged_files() == [], "a refused upload left a staged file behind"


@pytest.mark.parametrize("pipeline", [
    "grayscale|encode:format=webp",
    "resize:width=64",
    "grayscale|encode:format=png",  # libvips adds "unable to write to target <path>" here
])
def test_a_corrupt_image_among_good_ones_fails_alone_with_a_decode_error(
    shared_serve: Callable[..., Server], pipeline: str,
) -> None:
    server = shared_serve()
    files = [("good.jpg", jpeg_bytes(seed=1)), ("broken.jpg", truncated_jpeg()),
             ("good.png", png_bytes(seed=2))]
    job = server.wait_finished(server.submit_ok(files, pipeline)["id"])

    assert job["status"] == "partial", job
    good1, broken, good2 = job["items"]
    assert good1["status"] == good2["status"] == "succeeded"
    assert broken["status"] == "failed"
    assert broken["attempts"] == 1, "a decode error is permanent: never retried"
    assert broken["error"]["code"] == "decode_error"
    message = broken["error"]["message"]
    assert "jpeg" in message.lower() and "end of" in message.lower(), message
    assert str(server.data_dir) not in message and "/tmp" not in message, message
    assert broken["result_url"] is None and broken["output"] is None

    refused = server.client.get(f"/v1/jobs/{job['id']}/items/1/result")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "conflict"
    assert server.client.get(good2["result_url"]).status_code == 200
    archive = server.client.get(job["urls"]["archive"])
    assert archive.status_code == 200


def test_a_file_that_is_not_an_image_is_refused_by_name_and_nothing_is_stored(
    shared_serve: Callable[..., Server],
) -> None:
    server = shared_serve()
    before = _stored(server)
    for name, data in (("notes.txt", b"just some text, not an image\n" * 20),
                       ("disguised.png", b"<html><body>not a png</body></html>" * 5)):
        response = server.submit([("good.jpg", jpeg_bytes()), (name, data)], "grayscale")
        assert response.status_code == 415, response.text
        error = response.json()["error"]
        assert error["code"] == "unsupported_format"
        assert error["message"].startswith(f"{name}:"), error
        assert "jpeg" in error["message"] and "png" in error["message"]  # what is accepted
    _assert_nothing_stored(server, before)


def test_a_decompression_bomb_is_refused_from_its_header(
    shared_serve: Callable[..., Server],
) -> None:
    server = shared_serve()
    before = _stored(server)
    bomb = bomb_png(20_000, 20_000)
    assert len(bomb) < 10_000
    response = server.submit([("good.jpg", jpeg_bytes()), ("bomb.png", bomb)], "grayscale")
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "image_too_large"
    assert error["message"].startswith("bomb.png:"), error
    assert "20000×20000" in error["message"] and "16,000,000" in error["message"], error
    _assert_nothing_stored(server, before)


def test_more_than_ten_files_are_refused(shared_serve: Callable[..., Server]) -> None:
    server = shared_serve()
    before = _stored(server)
    files = [(f"img{n}.jpg", jpeg_bytes(32, 32, seed=n)) for n in range(11)]
    response = server.submit(files, "grayscale")
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "too_many_files"
    assert "at most 10" in error["message"], error
    _assert_nothing_stored(server, before)
    accepted = server.submit(files[:10], "grayscale")
    assert accepted.status_code == 201
    server.wait_finished(accepted.json()["id"])  # nothing left running on the shared server


def test_a_file_over_the_byte_limit_is_refused_while_streaming(
    serve: Callable[..., Server],
) -> None:
    server = serve(max_file_bytes=100_000)
    before = _stored(server)
    big = jpeg_bytes(600, 400) + b"\0" * 150_000  # trailing bytes: still a JPEG
    assert len(big) > 100_000
    response = server.submit([("small.jpg", jpeg_bytes()), ("big.jpg", big)], "grayscale")
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "file_too_large"
    assert error["message"].startswith("big.jpg:") and "limit of 97.7 KiB" in error["message"], error
    _assert_nothing_stored(server, before)
    assert server.submit([("small.jpg", jpeg_bytes())], "grayscale").status_code == 201
