"""The AI Upscaler, request by request as its own Next.js front end sends them (its
src/lib/api.ts: uploadJobsWithProgress, getJobs, getRecentJobs, getQueueStats, cancelJob,
retryJob, and the URLs it puts in <img> and <a download>), against `imgq serve`."""

from __future__ import annotations

import io
import zipfile
from datetime import datetime
from typing import Any

import pytest

from tests.fixtures.encoded import big_png, image_info, jpeg_bytes, png_bytes, truncated_jpeg
from tests.fixtures.server import Server
from tests.compat.conftest import needs_operation
from tests.fixtures.waiting import wait_for

TERMINAL = ("completed", "failed", "cancelled")
#: Every field its src/lib/types.ts Job declares.
JOB_FIELDS = {"id", "status", "original_filename", "original_key", "result_key", "result_url",
              "original_url", "thumbnail_url", "progress", "scale", "method", "created_at",
              "expires_at", "started_at", "finished_at", "error_message", "status_detail"}


def upload(server: Server, files: list[tuple[str, bytes]], scale: int | str = 4,
           method: str = "real_esrgan", **more: str) -> Any:
    """uploadJobsWithProgress: scale, method, denoise_first, face_enhance, then the files."""
    form = {"scale": str(scale), "method": method, "denoise_first": "false",
            "face_enhance": "true", **more}
    parts = [("files", (name, data, "image/png")) for name, data in files]
    return server.client.post("/api/jobs/upload", data=form, files=parts)


def upload_ok(server: Server, files: list[tuple[str, bytes]], scale: int = 4,
              method: str = "real_esrgan", **more: str) -> list[str]:
    response = upload(server, files, scale, method, **more)
    assert response.status_code == 200, response.text
    return response.json()["job_ids"]  # type: ignore[no-any-return]


def get_jobs(server: Server, ids: list[str]) -> list[dict[str, Any]]:
    """getJobs: GET /api/jobs?ids=<comma-separated, URI-encoded>."""
    response = server.client.get("/api/jobs", params={"ids": ",".join(ids)})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def wait_terminal(server: Server, ids: list[str]) -> list[dict[str, Any]]:
    """usePollJobs: poll until every job is completed, failed or cancelled."""
    return wait_for(lambda: get_jobs(server, ids),
                    lambda jobs: all(j["status"] in TERMINAL for j in jobs),
                    what="every job finished")


def pipeline_of(server: Server, job_id: str) -> list[dict[str, Any]]:
    return server.job(job_id)["pipeline"]  # type: ignore[no-any-return]


# -- its upload page's methods ----------------------------------------------------------------
@pytest.mark.parametrize(("scale", "method", "model"), [
    (2, "real_esrgan", "realesrgan-x4plus"),
    (4, "swinir", "dat-light-x4"),
    (2, "real_esrgan_anime", "realesrgan-x4plus-anime"),
    (4, "esrgan", "realesrgan-x4plus"),
])
def test_each_upscaling_method_runs_its_model_and_the_result_downloads(
    server: Server, operations: set[str], scale: int, method: str, model: str
) -> None:
    needs_operation(operations, "upscale")
    ids = upload_ok(server, [("dog.jpg", jpeg_bytes(20, 16))], scale, method)
    job = wait_terminal(server, ids)[0]
    assert JOB_FIELDS <= set(job)
    assert job["status"] == "completed", job
    assert (job["original_filename"], job["scale"], job["method"]) == ("dog.jpg", scale, method)
    assert job["error_message"] is None
    datetime.fromisoformat(job["expires_at"])
    assert pipeline_of(server, job["id"])[0]["model"] == model
    download = server.client.get(job["result_url"])
    assert download.headers["content-type"] == "image/png"
    assert "dog_upscaled.png" in download.headers["content-disposition"]
    assert image_info(download.content)[:3] == ("png", 20 * scale, 16 * scale)


def test_each_file_of_an_upload_is_its_own_job(idle: Server) -> None:
    ids = upload_ok(idle, [("a.png", png_bytes(8, 8)), ("b.png", png_bytes(9, 9))], 1,
                    "convert", target_format="png")
    jobs = get_jobs(idle, ids)
    assert [(j["id"], j["original_filename"], j["status"]) for j in jobs] == [
        (ids[0], "a.png", "queued"), (ids[1], "b.png", "queued")]


def test_background_remove_at_scale_1_gives_a_same_size_png_with_alpha(
        server: Server, operations: set[str]) -> None:
    needs_operation(operations, "remove_background")
    ids = upload_ok(server, [("shop.jpg", jpeg_bytes(64, 48))], 1, "background_remove")
    job = wait_terminal(server, ids)[0]
    assert job["status"] == "completed", job
    assert pipeline_of(server, ids[0])[0]["op"] == "remove_background"
    result = server.client.get(job["result_url"])
    assert image_info(result.content) == ("png", 64, 48, 4)
    assert "shop_upscaled.png" in result.headers["content-disposition"]


def test_convert_writes_the_target_format_at_the_quality_asked(server: Server) -> None:
    ids = upload_ok(server, [("pic.png", png_bytes(40, 30))], 1, "convert",
                    target_format="webp", quality="60")
    job = wait_terminal(server, ids)[0]
    assert job["status"] == "completed" and job["target_format"] == "webp"
    assert job["quality"] == 60
    result = server.client.get(job["result_url"])
    assert result.headers["content-type"] == "image/webp"
    assert "pic_converted.webp" in result.headers["content-disposition"]
    assert image_info(result.content)[:3] == ("webp", 40, 30)


# -- what the jobs page shows -----------------------------------------------------------------
def test_the_original_and_its_thumbnail_are_what_was_uploaded(server: Server) -> None:
    sent = png_bytes(300, 200, seed=4)
    ids = upload_ok(server, [("wide.png", sent)], 1, "convert", target_format="png")
    job = get_jobs(server, ids)[0]
    original = server.client.get(job["original_url"])
    assert original.status_code == 200 and original.content == sent
    assert original.headers["content-type"] == "image/png"
    assert "wide.png" in original.headers["content-disposition"]
    thumb = server.client.get(job["thumbnail_url"])
    assert thumb.headers["content-type"] == "image/jpeg"
    assert image_info(thumb.content)[:3] == ("jpeg", 120, 80)
    small = upload_ok(server, [("tiny.png", png_bytes(30, 20))], 1, "convert",
                      target_format="png")
    tiny = server.client.get(f"/api/jobs/{small[0]}/thumbnail")
    assert image_info(tiny.content)[:3] == ("jpeg", 30, 20)  # never enlarged


def test_batch_download_zips_the_completed_results_only(server: Server) -> None:
    good = upload_ok(server, [("a.png", png_bytes(20, 20, seed=1)),
                              ("b.png", png_bytes(30, 10, seed=2))], 1, "convert",
                     target_format="png")
    broken = upload_ok(server, [("c.jpg", truncated_jpeg())], 1, "convert",
                       target_format="png")
    jobs = wait_terminal(server, good + broken)
    assert [j["status"] for j in jobs] == ["completed", "completed", "failed"]
    response = server.client.get("/api/jobs/batch-download",
                                 params={"ids": ",".join(good + broken)})
    assert response.headers["content-type"] == "application/zip"
    assert "upscaled_batch.zip" in response.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert sorted(archive.namelist()) == ["a_converted.png", "b_converted.png"]
    assert image_info(archive.read("b_converted.png"))[:3] == ("png", 30, 10)


def test_queue_stats_count_waiting_and_running_jobs(idle: Server) -> None:
    before = idle.client.get("/api/jobs/queue-stats").json()
    upload_ok(idle, [("q1.png", png_bytes(8, 8)), ("q2.png", png_bytes(8, 8))], 1, "convert",
              target_format="png")
    after = idle.client.get("/api/jobs/queue-stats").json()
    assert after == {"queued": before["queued"] + 2, "processing": before["processing"]}


def test_recent_jobs_list_newest_first_and_honour_the_limit(idle: Server) -> None:
    first = upload_ok(idle, [("r1.png", png_bytes(8, 8))], 1, "convert", target_format="png")
    second = upload_ok(idle, [("r2.png", png_bytes(8, 8))], 1, "convert", target_format="png")
    recent = idle.client.get("/api/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in recent] == second + first


# -- cancel and retry -------------------------------------------------------------------------
def test_cancelling_a_running_job_ends_cancelled_and_a_second_cancel_is_refused(
        server: Server, operations: set[str]) -> None:
    needs_operation(operations, "upscale")
    ids = upload_ok(server, [("slow.png", big_png(400, 300))], 4, "real_esrgan")
    wait_for(lambda: get_jobs(server, ids)[0], lambda j: j["status"] != "queued",
             what="the job started")
    response = server.client.post(f"/api/jobs/{ids[0]}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert response.json()["error_message"] == "Cancelled by user"
    assert get_jobs(server, ids)[0]["status"] == "cancelled"
    again = server.client.post(f"/api/jobs/{ids[0]}/cancel")
    assert again.status_code == 400 and "cannot be cancelled" in again.json()["detail"]
    item = wait_for(lambda: server.job(ids[0])["items"][0],
                    lambda i: i["status"] not in ("queued", "running"), what="the worker stopped")
    assert item["status"] == "cancelled"
    assert server.client.get(f"/api/jobs/{ids[0]}/download").status_code == 404


def test_a_failed_job_is_retried_as_a_new_job_with_the_same_image(server: Server) -> None:
    broken = truncated_jpeg()
    ids = upload_ok(server, [("broken.jpg", broken)], 1, "convert", target_format="jpeg",
                    quality="70")
    failed = wait_terminal(server, ids)[0]
    assert failed["status"] == "failed" and failed["error_message"]
    response = server.client.post(f"/api/jobs/{ids[0]}/retry")
    assert response.status_code == 200, response.text
    new = response.json()
    assert new["id"] != ids[0] and new["status"] in ("queued", "processing", "failed")
    assert (new["original_filename"], new["method"], new["target_format"], new["quality"]) == (
        "broken.jpg", "convert", "jpeg", 70)
    assert server.client.get(new["original_url"]).content == broken
    assert wait_terminal(server, [new["id"]])[0]["status"] == "failed"


def test_only_a_failed_job_can_be_retried(server: Server) -> None:
    ids = upload_ok(server, [("ok.png", png_bytes(8, 8))], 1, "convert", target_format="png")
    wait_terminal(server, ids)
    response = server.client.post(f"/api/jobs/{ids[0]}/retry")
    assert response.status_code == 400
    assert response.json() == {"detail": "Only failed jobs can be retried"}


def test_an_expired_job_answers_410_result_expired(brief: Server) -> None:
    ids = upload_ok(brief, [("a.png", png_bytes(20, 20))], 1, "convert", target_format="png")
    job = wait_terminal(brief, ids)[0]
    assert job["status"] == "completed"
    wait_for(lambda: brief.client.get(f"/api/jobs/{ids[0]}/download").status_code,
             lambda code: code == 410, timeout=30, what="the result expired")
    response = brief.client.get(f"/api/jobs/{ids[0]}/download")
    assert response.json() == {"detail": "Result expired"}
    assert brief.client.get(f"/api/jobs/{ids[0]}/original").status_code == 404
