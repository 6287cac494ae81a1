"""The Image Queue Demo: POST /upload, GET /status/{task_id}, GET /health, the upload
form and the result page, as its README documents them."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from tests.fixtures.encoded import image_info, jpeg_bytes, png_bytes
from tests.fixtures.server import Server
from tests.fixtures.waiting import wait_for

STATUSES = ("pending", "processing", "done")


def upload(server: Server, data: bytes, name: str = "test_image.JPG", **headers: str) -> Any:
    return server.client.post("/upload", files={"file": (name, data, "image/jpeg")},
                              headers=headers)


def wait_done(server: Server, task_id: int) -> dict[str, Any]:
    return wait_for(lambda: server.client.get(f"/status/{task_id}").json(),
                    lambda body: body["status"] not in ("pending", "processing"), what="done")


def test_an_upload_is_processed_and_shown_on_the_result_page(server: Server) -> None:
    response = upload(server, jpeg_bytes(120, 80))
    assert response.status_code == 200, response.text
    created = response.json()
    assert set(created) == {"task_id", "filename", "message"}
    assert isinstance(created["task_id"], int) and created["filename"] == "test_image.JPG"
    assert isinstance(created["message"], str)

    first = server.client.get(f"/status/{created['task_id']}")
    assert first.status_code == 200
    assert set(first.json()) == {"task_id", "filename", "status", "upload_time"}
    assert first.json()["status"] in STATUSES
    datetime.fromisoformat(first.json()["upload_time"])

    status = wait_done(server, created["task_id"])
    assert status == {**first.json(), "status": "done"}

    page = server.client.get("/result/test_image.JPG")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    src = re.search(r'<img src="([^"]+)"', page.text)
    assert src, page.text
    assert src.group(1) == "/processed/test_image.JPG"  # where its result page pointed
    image = server.client.get(src.group(1))
    assert image.status_code == 200
    # The default processing keeps the picture: same format and size, metadata stripped.
    assert image_info(image.content)[:3] == ("jpeg", 120, 80)


def test_task_ids_are_random_integers_that_fit_a_json_number(server: Server) -> None:
    ids = [upload(server, jpeg_bytes(16, 16), f"n{i}.jpg").json()["task_id"] for i in range(4)]
    assert len(set(ids)) == 4
    assert all(isinstance(i, int) and 0 < i <= 2**53 - 1 for i in ids)
    assert all(abs(a - b) > 1000 for a, b in zip(ids, ids[1:]))  # not sequential
    for task_id in ids:
        assert server.client.get(f"/status/{task_id}").json()["task_id"] == task_id


def test_an_unknown_task_is_not_found(server: Server) -> None:
    for task_id in ("1", "9007199254740991", "abc"):
        response = server.client.get(f"/status/{task_id}")
        assert response.status_code == 404
        assert response.json() == {"detail": "Task not found"}


def test_a_pending_task_says_pending(idle: Server) -> None:
    task_id = upload(idle, jpeg_bytes(32, 32), "wait.jpg").json()["task_id"]
    assert idle.client.get(f"/status/{task_id}").json()["status"] == "pending"
    page = idle.client.get("/result/wait.jpg")
    assert page.status_code == 200 and 'http-equiv="refresh"' in page.text


def test_health(server: Server) -> None:
    response = server.client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_the_upload_form_posts_the_file_field_and_leads_to_the_result_page(server: Server) -> None:
    form = server.client.get("/upload")
    assert form.status_code == 200
    assert 'enctype="multipart/form-data"' in form.text and 'name="file"' in form.text
    browser = upload(server, jpeg_bytes(32, 32), "from form.jpg",
                     accept="text/html,application/xhtml+xml")
    assert browser.status_code == 303
    assert browser.headers["location"] == "/result/from%20form.jpg"


def test_a_file_that_is_not_an_image_is_refused(server: Server) -> None:
    response = upload(server, b"GIF89a but not really", "fake.gif")
    assert response.status_code in (415, 422)
    assert response.json()["detail"]
    assert server.client.get("/result/fake.gif").status_code == 404


def test_the_job_behind_a_task_is_an_ordinary_imgq_job(server: Server) -> None:
    created = upload(server, jpeg_bytes(24, 24), "plain.jpg").json()
    wait_done(server, created["task_id"])
    jobs = server.client.get("/v1/jobs", params={"limit": 200}).json()["jobs"]
    ours = [j for j in jobs if j["items"][0]["name"] == "plain.jpg"]
    assert len(ours) == 1 and ours[0]["status"] == "succeeded"


def test_deleting_the_job_through_the_new_api_removes_the_task(idle: Server) -> None:
    created = upload(idle, jpeg_bytes(24, 24), "gone.jpg").json()
    job_id = next(j["id"] for j in idle.client.get("/v1/jobs").json()["jobs"]
                  if j["items"][0]["name"] == "gone.jpg")
    assert idle.client.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert idle.client.get(f"/status/{created['task_id']}").status_code == 404
    assert idle.client.get("/result/gone.jpg").status_code == 404


def test_its_own_api_test_sees_a_new_upload_pending_and_an_unknown_task_404(idle: Server) -> None:
    """tests/test_api.py: test_upload_and_status and test_status_not_found, as they send them."""
    files = {"file": ("test_image.JPG", jpeg_bytes(64, 48), "image/jpeg")}
    response = idle.client.post("/upload", files=files)
    assert response.status_code == 200
    task_id = response.json()["task_id"]
    status = idle.client.get(f"/status/{task_id}")
    assert status.status_code == 200 and status.json()["status"] == "pending"
    assert idle.client.get("/status/999999").status_code == 404
    assert idle.client.get("/processed/test_image.JPG").status_code == 404  # not processed yet


def test_a_browser_form_post_ends_on_a_result_page_whose_image_is_the_processed_file(
        server: Server) -> None:
    files = {"file": ("holiday photo.png", png_bytes(50, 40), "image/png")}
    posted = server.client.post("/upload", files=files, headers={"Accept": "text/html"})
    assert posted.status_code == 303
    assert posted.headers["location"] == "/result/holiday%20photo.png"
    page = wait_for(lambda: server.client.get(posted.headers["location"]).text,
                    lambda text: "<img" in text, what="the result page shows the image")
    src = re.search(r'<img src="([^"]+)"', page)
    assert src and src.group(1) == "/processed/holiday%20photo.png"
    assert image_info(server.client.get(src.group(1)).content)[:3] == ("png", 50, 40)
