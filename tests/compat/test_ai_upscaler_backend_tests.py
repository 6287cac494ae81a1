"""The AI Upscaler's own backend tests (backend/tests/test_health.py and test_jobs_api.py),
each request sent as they send it, to `imgq serve` instead of its FastAPI app, and each answer
checked as they check it (plus what the body says). Its rate-limit test has no counterpart:
imgq has no per-address upload rate (docs/compat.md)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import pyvips

from tests.fixtures.encoded import png_bytes
from tests.fixtures.server import Server
from tests.compat.conftest import start_server

FORM = {"scale": "4", "method": "real_esrgan", "denoise_first": "false", "face_enhance": "false"}
UNKNOWN = "00000000-0000-0000-0000-000000000001"


def black_png(width: int, height: int) -> bytes:
    """Many pixels in few bytes."""
    return bytes(pyvips.Image.black(width, height).pngsave_buffer())


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Its tests shrink the limits (2 files, a few hundred bytes, 16 MP); so does this server."""
    started = start_server(tmp_path_factory, "ai-upscaler-strict", "--no-workers", max_files=2,
                           max_file_bytes=2_000, max_pixels=2_000, ai_max_pixels=100)
    yield started
    started.close()


def test_health_returns_ok(server: Server) -> None:
    response = server.client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_api_health_returns_checks(server: Server) -> None:
    response = server.client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {
        "database": "ok", "storage": "ok", "redis": "ok"}}


def test_list_jobs_empty_and_with_limit(idle: Server) -> None:
    assert isinstance(idle.client.get("/api/jobs").json(), list)
    limited = idle.client.get("/api/jobs?limit=5")
    assert limited.status_code == 200 and len(limited.json()) <= 5


def test_queue_stats(idle: Server) -> None:
    stats = idle.client.get("/api/jobs/queue-stats").json()
    assert set(stats) == {"queued", "processing"}
    assert all(isinstance(v, int) and v >= 0 for v in stats.values())


def test_upload_rejects_too_many_files(strict: Server) -> None:
    files = [("files", ("img.png", black_png(10, 10), "image/png"))] * 3
    response = strict.client.post("/api/jobs/upload", data=FORM, files=files)
    assert response.status_code == 400
    assert "too many files" in response.json()["detail"].lower()


def test_upload_rejects_oversized_file(strict: Server) -> None:
    files = [("files", ("img.png", png_bytes(100, 100), "image/png"))]
    response = strict.client.post("/api/jobs/upload", data=FORM, files=files)
    assert response.status_code == 400
    assert "img.png" in response.json()["detail"]


def test_upload_rejects_too_many_megapixels(strict: Server) -> None:
    files = [("files", ("wide.png", black_png(60, 40), "image/png"))]
    response = strict.client.post("/api/jobs/upload", data=FORM, files=files)
    assert response.status_code == 400, response.text
    assert "wide.png" in response.json()["detail"]


def test_upload_rejects_what_is_not_an_image(server: Server) -> None:
    files = [("files", ("a.png", b"definitely not a PNG", "image/png"))]
    response = server.client.post("/api/jobs/upload", data=FORM, files=files)
    assert response.status_code == 400 and "not an image" in response.json()["detail"]


@pytest.mark.parametrize(("form", "message"), [
    ({"scale": "3"}, "scale must be 2 or 4"),
    ({"method": "bicubic"}, ("method must be one of: real_esrgan, swinir, esrgan, "
                             "real_esrgan_anime, background_remove")),
    ({"method": "background_remove", "scale": "4"}, "scale must be 1 for background remove"),
    ({"method": "convert", "target_format": "bmp"}, "target_format required for convert"),
])
def test_bad_options_answer_400_with_its_messages(server: Server, form: dict[str, str],
                                                  message: str) -> None:
    before = server.jobs_total()
    files = [("files", ("a.png", png_bytes(16, 16), "image/png"))]
    response = server.client.post("/api/jobs/upload", data={**FORM, **form}, files=files)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(message)
    assert server.jobs_total() == before


def test_download_404_for_nonexistent_job(server: Server) -> None:
    response = server.client.get(f"/api/jobs/{UNKNOWN}/download")
    assert response.status_code == 404 and response.json() == {"detail": "Job not found"}


@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_retry_and_cancel_404_for_nonexistent_job(server: Server, action: str) -> None:
    response = server.client.post(f"/api/jobs/{UNKNOWN}/{action}")
    assert response.status_code == 404 and response.json() == {"detail": "Job not found"}


@pytest.mark.parametrize("what", ["original", "thumbnail"])
def test_original_and_thumbnail_404_for_nonexistent_job(server: Server, what: str) -> None:
    response = server.client.get(f"/api/jobs/{UNKNOWN}/{what}")
    assert response.status_code == 404
    assert response.json() == {"detail": f"{what.capitalize()} not available"}


def test_batch_download_400_when_ids_empty(server: Server) -> None:
    response = server.client.get("/api/jobs/batch-download?ids=")
    assert response.status_code == 400
    assert response.json() == {"detail": "ids required (comma-separated job IDs)"}


def test_batch_download_404_when_no_completed_results(server: Server) -> None:
    response = server.client.get(f"/api/jobs/batch-download?ids={UNKNOWN}")
    assert response.status_code == 404
    assert response.json() == {"detail": "No completed, non-expired results to download"}


def test_an_image_over_the_ai_size_limit_answers_400_naming_it(strict: Server) -> None:
    """The CPU limit of AI upscaling (IMGQ_AI_MAX_PIXELS, 100 here) refuses like its other
    limits: 400 with the file's name, and no job is made for any file of the upload."""
    if "upscale" not in strict.operations():
        pytest.skip("the 'upscale' operation is not installed on this server")
    before = strict.jobs_total()
    parts = [("files", (name, black_png(side, side), "image/png"))
             for name, side in (("small.png", 8), ("photo.png", 20))]
    response = strict.client.post("/api/jobs/upload", data=FORM, files=parts)
    assert response.status_code == 400, response.text
    assert "photo.png" in response.json()["detail"]
    assert strict.jobs_total() == before
