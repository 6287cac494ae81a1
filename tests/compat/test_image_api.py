"""image-api: POST /process-job, GET /status-job/{job_id}, GET /download/{job_id},
GET /images/{job_id}/{filename}, as its README documents them."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pytest

from tests.fixtures.encoded import bomb_png, image_info, jpeg_bytes, png_bytes
from tests.fixtures.server import Server
from tests.fixtures.waiting import wait_for

FILTERS = ["blur", "sharpen", "grayscale", "edges", "smooth"]


def process_job(server: Server, files: list[tuple[str, bytes]], filter: str | None = None,
                as_form: bool = False) -> Any:
    parts = [("files", (name, data, "image/jpeg")) for name, data in files]
    params = {"filter": filter} if filter and not as_form else None
    data = {"filter": filter} if filter and as_form else None
    return server.client.post("/process-job", files=parts, params=params, data=data)


def wait_ready(server: Server, job_id: str) -> dict[str, Any]:
    return wait_for(lambda: server.client.get(f"/status-job/{job_id}").json(),
                    lambda body: body.get("all_ready") is True, what="all_ready")


def test_a_job_of_several_images_runs_through_to_the_zip(server: Server) -> None:
    sent = [("a.jpg", jpeg_bytes(120, 80)), ("b.png", png_bytes(90, 60))]
    response = process_job(server, sent, "grayscale")
    assert response.status_code == 200, response.text
    created = response.json()
    assert isinstance(created["job_id"], str)
    assert len(created["task_ids"]) == 2 and all(isinstance(t, str) for t in created["task_ids"])

    status = wait_ready(server, created["job_id"])
    assert status["job_id"] == created["job_id"]
    assert status["all_successful"] is True
    assert [r["task_id"] for r in status["results"]] == created["task_ids"]
    urls = []
    for result, (_, _data), size in zip(status["results"], sent, [(120, 80), (90, 60)]):
        assert result["status"] == "SUCCESS"
        assert result["ready"] is True and result["successful"] is True
        assert result["image_url"].startswith(f"/images/{created['job_id']}/")
        assert result["image_url"].endswith(".jpg")
        image = server.client.get(result["image_url"])
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/jpeg"
        fmt, width, height, bands = image_info(image.content)
        assert (fmt, (width, height), bands) == ("jpeg", size, 1)  # grayscale
        urls.append(result["image_url"])

    archive = server.client.get(f"/download/{created['job_id']}")
    assert archive.status_code == 200
    assert archive.headers["content-type"] == "application/zip"
    assert f"{created['job_id']}.zip" in archive.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zf:
        assert sorted(zf.namelist()) == sorted(u.rsplit("/", 1)[1] for u in urls)
        assert all(image_info(zf.read(n))[0] == "jpeg" for n in zf.namelist())

    job = server.job(created["job_id"])  # an ordinary imgq job, seen by the v1 API
    assert [i["id"] for i in job["items"]] == created["task_ids"]


@pytest.mark.parametrize("name", FILTERS)
def test_every_documented_filter_works_given_as_form_field_or_query(server: Server,
                                                                     name: str) -> None:
    response = process_job(server, [("p.jpg", jpeg_bytes(64, 48))], name,
                           as_form=name in ("sharpen", "smooth"))
    assert response.status_code == 200, response.text
    status = wait_ready(server, response.json()["job_id"])
    assert status["all_successful"] is True
    assert server.job(status["job_id"])["pipeline"][0]["op"] == name


def test_the_filter_defaults_to_blur_as_in_the_seed(server: Server) -> None:
    response = process_job(server, [("p.jpg", jpeg_bytes(64, 48))])
    assert response.status_code == 200, response.text
    assert server.job(response.json()["job_id"])["pipeline"][0]["op"] == "blur"


def test_an_unknown_job_answers_the_seeds_error_body(server: Server) -> None:
    for path in ("/status-job/nope", "/download/nope"):
        response = server.client.get(path)
        assert response.status_code == 200
        assert response.json() == {"status": "error", "message": "job not found"}
    assert server.client.get("/images/nope/x.jpg").status_code == 404


def test_download_before_the_images_are_done_answers_pending(idle: Server) -> None:
    response = process_job(idle, [("p.jpg", jpeg_bytes(64, 48))], "edges")
    job_id = response.json()["job_id"]
    status = idle.client.get(f"/status-job/{job_id}").json()
    assert status["all_ready"] is False and status["all_successful"] is False
    assert status["results"][0]["status"] == "PENDING"
    assert "image_url" not in status["results"][0]
    pending = idle.client.get(f"/download/{job_id}")
    assert pending.status_code == 200
    assert pending.json() == {"status": "pending", "message": "Images not ready"}


def test_an_unsupported_filter_is_refused_before_anything_is_stored(server: Server) -> None:
    before = server.jobs_total()
    response = process_job(server, [("p.jpg", jpeg_bytes(64, 48))], "sepia")
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "error" and "Unsupported filter: sepia" in body["message"]
    assert server.jobs_total() == before


def test_limits_answer_clear_errors_in_the_seeds_shape(server: Server) -> None:
    too_many = process_job(server, [(f"{i}.jpg", jpeg_bytes(16, 16)) for i in range(11)], "blur")
    assert too_many.status_code == 413
    assert too_many.json()["status"] == "error"
    assert "too many files" in too_many.json()["message"]

    not_an_image = process_job(server, [("notes.jpg", b"plain text, not a picture")], "blur")
    assert not_an_image.status_code == 415
    assert "not an image" in not_an_image.json()["message"]

    huge = process_job(server, [("bomb.png", bomb_png())], "blur")
    assert huge.status_code == 413
    assert huge.json()["status"] == "error"


def test_expired_results_answer_gone(brief: Server) -> None:
    job_id = process_job(brief, [("p.jpg", jpeg_bytes(64, 48))], "smooth").json()["job_id"]
    url = wait_ready(brief, job_id)["results"][0]["image_url"]
    wait_for(lambda: brief.job(job_id), lambda job: job["data_removed"], what="expiry")
    assert brief.client.get(f"/download/{job_id}").status_code == 410
    assert brief.client.get(url).status_code in (404, 410)


def test_swagger_ui_is_offered_the_filter_as_a_query_choice_and_no_form_default(
        server: Server) -> None:
    operation = server.client.get("/openapi.json").json()["paths"]["/process-job"]["post"]
    (param,) = [p for p in operation["parameters"] if p["name"] == "filter"]
    assert param["in"] == "query" and param["schema"]["default"] == "blur"
    assert set(param["schema"]["enum"]) == {"blur", "sharpen", "grayscale", "edges", "smooth"}
    form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(form["properties"]) == {"files"}


def test_the_query_filter_wins_over_a_form_field(server: Server) -> None:
    files = [("files", ("a.png", png_bytes(40, 30), "image/png"))]
    response = server.client.post("/process-job", params={"filter": "grayscale"},
                                  data={"filter": "blur"}, files=files)
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]
    assert server.job(job_id)["pipeline"][0]["op"] == "grayscale"
