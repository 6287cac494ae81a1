"""The AI Upscaler: POST /api/jobs/upload, GET /api/jobs?ids=..., GET
/api/jobs/{id}/download, as its README documents them (the frontend's api.ts calls)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest

from tests.acceptance.conftest import Server, image_info, jpeg_bytes, png_bytes
from tests.compat.conftest import needs_operation, wait_for

FIELDS = {"id", "status", "original_filename", "scale", "method", "expires_at",
          "error_message", "result_url"}


def upload(server: Server, files: list[tuple[str, bytes]], scale: int | str = 4,
           method: str = "real_esrgan") -> Any:
    parts = [("files", (name, data, "image/png")) for name, data in files]
    return server.client.post("/api/jobs/upload", files=parts,
                              data={"scale": str(scale), "method": method})


def get_jobs(server: Server, ids: list[str]) -> list[dict[str, Any]]:
    response = server.client.get("/api/jobs", params={"ids": ",".join(ids)})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def wait_finished(server: Server, ids: list[str]) -> list[dict[str, Any]]:
    return wait_for(lambda: get_jobs(server, ids),
                    lambda jobs: all(j["status"] in ("completed", "failed") for j in jobs),
                    what="every job completed or failed")


# -- refusals (always testable) ---------------------------------------------------------------
@pytest.mark.parametrize(("field", "value", "message"), [
    ("scale", 3, "scale must be 2 or 4"),
    ("method", "bicubic", "method must be real_esrgan or swinir"),
])
def test_a_bad_scale_or_method_answers_400(server: Server, field: str, value: Any,
                                           message: str) -> None:
    options: dict[str, Any] = {"scale": 4, "method": "real_esrgan", field: value}
    response = upload(server, [("a.png", png_bytes(16, 16))], **options)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(message)


def test_the_batch_limits_answer_clear_errors(server: Server) -> None:
    too_many = upload(server, [(f"{i}.png", png_bytes(8, 8)) for i in range(11)])
    assert too_many.status_code == 413 and "too many files" in too_many.json()["detail"]
    not_an_image = upload(server, [("a.png", b"definitely not a PNG")])
    assert not_an_image.status_code == 415 and "not an image" in not_an_image.json()["detail"]


def test_unknown_jobs_are_left_out_or_not_found(server: Server) -> None:
    assert get_jobs(server, ["0b7d2c4e-0000-4000-8000-000000000000"]) == []
    response = server.client.get("/api/jobs/0b7d2c4e-0000-4000-8000-000000000000/download")
    assert response.status_code == 404 and response.json() == {"detail": "Job not found"}


def test_without_the_upscale_operation_the_upload_says_so(server: Server,
                                                          operations: set[str]) -> None:
    if "upscale" in operations:
        pytest.skip("upscale is installed here")
    before = server.jobs_total()
    response = upload(server, [("a.png", png_bytes(16, 16))])
    assert response.status_code == 503
    assert "AI upscaling is not available" in response.json()["detail"]
    assert server.jobs_total() == before


# -- whole jobs (need the upscale operation) --------------------------------------------------
@pytest.mark.parametrize(("scale", "method"), [(2, "real_esrgan"), (4, "swinir")])
def test_each_file_becomes_a_job_that_is_upscaled_and_downloaded(
    server: Server, operations: set[str], scale: int, method: str
) -> None:
    needs_operation(operations, "upscale")
    sent = [("cat.png", png_bytes(24, 20)), ("dog.jpg", jpeg_bytes(20, 16))]
    response = upload(server, sent, scale, method)
    assert response.status_code == 200, response.text
    ids = response.json()["job_ids"]
    assert len(ids) == 2 and all(isinstance(i, str) for i in ids)

    first = get_jobs(server, ids)
    assert [j["id"] for j in first] == ids
    assert all(j["status"] in ("queued", "processing", "completed") for j in first)

    jobs = wait_finished(server, ids)
    for job, (name, _), size in zip(jobs, sent, [(24, 20), (20, 16)]):
        assert FIELDS <= set(job)
        assert job["status"] == "completed", job
        assert (job["original_filename"], job["scale"], job["method"]) == (name, scale, method)
        assert job["error_message"] is None
        datetime.fromisoformat(job["expires_at"])
        assert job["result_url"].endswith(f"/api/jobs/{job['id']}/download")
        download = server.client.get(job["result_url"])
        assert download.status_code == 200
        assert download.headers["content-type"] == "image/png"
        assert f"{name.rsplit('.', 1)[0]}_upscaled.png" in download.headers["content-disposition"]
        assert image_info(download.content)[:3] == ("png", size[0] * scale, size[1] * scale)


def test_an_expired_job_answers_410_result_expired(brief: Server) -> None:
    if "upscale" not in brief.operations():
        pytest.skip("the 'upscale' operation is not installed on this server")
    ids = upload(brief, [("a.png", png_bytes(20, 20))], 2).json()["job_ids"]
    job = wait_finished(brief, ids)[0]
    assert job["status"] == "completed"
    expires = datetime.fromisoformat(job["expires_at"]).timestamp()
    time.sleep(max(0.0, expires - time.time()) + 0.2)
    response = brief.client.get(f"/api/jobs/{ids[0]}/download")
    assert response.status_code == 410 and response.json() == {"detail": "Result expired"}
