"""A batch of images through a multi-step pipeline, downloaded one by one and as a ZIP."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable

import pyvips

from tests.fixtures.encoded import image_info, jpeg_bytes, png_bytes
from tests.fixtures.server import Server

PIPELINE = "grayscale|resize:width=64|encode:format=webp"


def _colour_spread(data: bytes) -> float:
    """How far apart the colour bands are at most (0 for a grey image)."""
    image = pyvips.Image.new_from_buffer(data, "")
    colour = image[:3] if image.bands >= 3 else image
    if colour.bands == 1:
        return 0.0
    return float(max((colour[0] - colour[1]).abs().max(), (colour[1] - colour[2]).abs().max()))


def test_a_batch_goes_through_a_multi_step_pipeline_to_a_zip(
    shared_serve: Callable[..., Server],
) -> None:
    server = shared_serve()
    files = [
        ("photo.jpg", jpeg_bytes(200, 150, seed=1)),
        ("photo.png", png_bytes(160, 100, seed=2)),
        ("alpha.png", png_bytes(128, 128, alpha=True, seed=3)),
        ("../../sneaky.jpg", jpeg_bytes(100, 50, seed=4)),
    ]
    response = server.submit(files, PIPELINE)
    assert response.status_code == 201, response.text
    submitted = response.json()
    assert response.headers["Location"] == submitted["urls"]["self"]
    assert [i["status"] for i in submitted["items"]] == ["queued"] * 4
    assert [i["name"] for i in submitted["items"]] == [
        "photo.jpg", "photo.png", "alpha.png", "sneaky.jpg"]
    assert [s["op"] for s in submitted["pipeline"]] == ["grayscale", "resize", "encode"]

    job = server.wait_finished(submitted["id"])
    assert job["status"] == "succeeded", job
    assert job["progress"] == 100
    assert job["counts"] == {"succeeded": 4}
    expected = {  # name -> (result name, height after resizing to 64 wide)
        "photo.jpg": ("photo.webp", 48), "photo.png": ("photo.webp", 40),
        "alpha.png": ("alpha.webp", 64), "sneaky.jpg": ("sneaky.webp", 32),
    }
    for item in job["items"]:
        result_name, height = expected[item["name"]]
        assert item["status"] == "succeeded"
        assert item["attempts"] == 1
        assert item["error"] is None
        assert item["progress"] == 100
        assert item["output"]["format"] == "webp"
        assert (item["output"]["width"], item["output"]["height"]) == (64, height)
        assert item["output"]["bytes"] > 0
        assert item["result_name"] == result_name
        assert item["timings"]["started_at"] and item["timings"]["finished_at"]
        assert item["timings"]["processing_seconds"] > 0

        download = server.client.get(item["result_url"])
        assert download.status_code == 200, download.text
        assert download.headers["content-type"] == "image/webp"
        assert f'filename="{result_name}"' in download.headers["content-disposition"]
        assert int(download.headers["content-length"]) == item["output"]["bytes"]
        fmt, width, got_height, bands = image_info(download.content)
        assert (fmt, width, got_height) == ("webp", 64, height)
        assert bands == (4 if item["name"] == "alpha.png" else 3)  # alpha survives
        assert _colour_spread(download.content) <= 4, "the result should be grey"

    archive = server.client.get(job["urls"]["archive"])
    assert archive.status_code == 200, archive.text
    assert archive.headers["content-type"] == "application/zip"
    assert f'filename="imgq-{job["id"][:8]}.zip"' in archive.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        assert sorted(names) == sorted(["photo.webp", "photo (2).webp", "alpha.webp",
                                        "sneaky.webp"])
        for name in names:
            assert "/" not in name and "\\" not in name and not name.startswith(".")
            fmt, width, _, _ = image_info(zf.read(name))
            assert (fmt, width) == ("webp", 64)


def test_the_service_describes_itself_and_answers_errors_as_json(
    shared_serve: Callable[..., Server],
) -> None:
    server = shared_serve()
    client = server.client
    jobs_before, stored_before = server.jobs_total(), server.stored_files()

    operations = client.get("/v1/operations").json()
    by_name = {op["name"]: op for op in operations}
    for name in ("grayscale", "blur", "sharpen", "edges", "smooth", "edge_enhance", "resize",
                 "thumbnail", "crop", "rotate", "flip", "flop", "brightness", "contrast",
                 "saturation", "encode"):
        assert name in by_name, f"GET /v1/operations does not list {name}"
        assert by_name[name]["resource"] in ("cpu", "gpu")
        assert by_name[name]["params"]["type"] == "object"
    assert "width" in by_name["resize"]["params"]["properties"]

    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "storage": "ok", "disk": "ok"}

    docs = client.get("/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/items/{index}/result",
                 "/v1/jobs/{job_id}/archive", "/v1/jobs/{job_id}/cancel", "/v1/operations",
                 "/healthz", "/readyz"):
        assert path in paths, f"{path} missing from /openapi.json"

    missing = "0b4f2d3e-9f1c-4a4e-9d59-3f0e8a7c1d2b"
    for method, url in (("GET", f"/v1/jobs/{missing}"), ("GET", f"/v1/jobs/{missing}/archive"),
                        ("POST", f"/v1/jobs/{missing}/cancel"),
                        ("GET", f"/v1/jobs/{missing}/items/0/result")):
        answer = client.request(method, url)
        assert answer.status_code == 404, (url, answer.text)
        assert answer.json()["error"]["code"] == "not_found"
        assert missing in answer.json()["error"]["message"]

    image = [("photo.jpg", jpeg_bytes())]
    for pipeline, step, op, field in (
        ("resize:width=-5", "step 0", "resize", "width"),
        ("grayscale|blur:radius=abc", "step 1", "blur", "radius"),
        ('[{"op": "encode", "format": "bmp"}]', "step 0", "encode", "format"),
    ):
        answer = server.submit(image, pipeline)
        assert answer.status_code == 422, (pipeline, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "invalid_parameters"
        assert f"{step} ({op})" in error["message"] and field in error["message"], error
    unknown = server.submit(image, "grayscale|sepia")
    assert unknown.status_code == 422
    assert "sepia" in unknown.json()["error"]["message"]
    assert server.jobs_total() == jobs_before
    assert server.stored_files() == stored_before and server.staged_files() == []
