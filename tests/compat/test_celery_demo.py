"""The FastAPI + Celery demo: POST /process-image/, GET /task-status/{task_id},
GET /task-result/{task_id}, as its README documents them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.encoded import image_info, jpeg_bytes, png_bytes
from tests.fixtures.server import Server
from tests.fixtures.waiting import wait_for


def process_image(server: Server, data: bytes, operation: str, name: str = "photo.jpg") -> Any:
    return server.client.post("/process-image/", files={"file": (name, data, "image/jpeg")},
                              data={"operation": operation})


def wait_done(server: Server, task_id: str) -> dict[str, Any]:
    return wait_for(lambda: server.client.get(f"/task-status/{task_id}").json(),
                    lambda body: body["status"] in ("SUCCESS", "FAILURE"), what="SUCCESS")


@pytest.mark.parametrize(("operation", "data", "fmt", "size", "bands"), [
    ("grayscale", jpeg_bytes(120, 80), "jpeg", (120, 80), 1),
    ("resize", jpeg_bytes(120, 80), "jpeg", (100, 100), 3),
    ("resize", png_bytes(40, 30), "png", (100, 100), 3),  # Pillow's resize enlarges too
])
def test_an_image_is_processed_and_its_result_retrieved(
    server: Server, operation: str, data: bytes, fmt: str, size: tuple[int, int], bands: int
) -> None:
    name = f"your-image-name.{'png' if fmt == 'png' else 'jpg'}"
    response = process_image(server, data, operation, name)
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["message"] == "Image processing started"
    assert isinstance(created["task_id"], str)

    first = server.client.get(f"/task-status/{created['task_id']}").json()
    assert first["task_id"] == created["task_id"]
    assert first["status"] in ("PENDING", "STARTED", "SUCCESS")

    status = wait_done(server, created["task_id"])
    assert status["status"] == "SUCCESS"
    assert status["result"] == f"processed/{name}"  # as its README shows

    result = server.client.get(f"/task-result/{created['task_id']}")
    assert result.status_code == 200
    assert result.json() == {"task_id": created["task_id"], "processed_image": status["result"]}

    image = server.client.get("/" + status["result"])
    assert image.status_code == 200
    found_fmt, width, height, found_bands = image_info(image.content)
    assert (found_fmt, (width, height), found_bands) == (fmt, size, bands)


def test_a_pending_task_has_no_result_yet(idle: Server) -> None:
    task_id = process_image(idle, jpeg_bytes(64, 48), "grayscale").json()["task_id"]
    assert idle.client.get(f"/task-status/{task_id}").json() == {"task_id": task_id,
                                                                "status": "PENDING"}
    assert idle.client.get(f"/task-result/{task_id}").json() == {"task_id": task_id,
                                                                "processed_image": None}


def test_an_unknown_operation_or_a_missing_file_is_refused(server: Server) -> None:
    before = server.jobs_total()
    response = process_image(server, jpeg_bytes(32, 32), "sepia")
    assert response.status_code == 400 and "grayscale or resize" in response.json()["detail"]
    missing = server.client.post("/process-image/", data={"operation": "grayscale"})
    assert missing.status_code == 400 and missing.json()["detail"]
    assert server.jobs_total() == before


def test_a_file_that_is_not_an_image_is_refused_with_the_new_apis_error(server: Server) -> None:
    response = process_image(server, b"%PDF-1.4 not an image", "grayscale", "doc.pdf")
    assert response.status_code == 415
    assert "not an image" in response.json()["detail"]


def test_an_unknown_task_is_not_found(server: Server) -> None:
    for path in ("/task-status/f8a5d96e-ff1f-4d9d-bc67-b1c6b9dbec1f",
                 "/task-result/f8a5d96e-ff1f-4d9d-bc67-b1c6b9dbec1f"):
        response = server.client.get(path)
        assert response.status_code == 404
        assert response.json() == {"detail": "Task not found"}


def test_the_processed_path_serves_the_newest_upload_of_that_name(server: Server) -> None:
    first = process_image(server, jpeg_bytes(120, 80), "grayscale", "same-name.jpg").json()
    wait_done(server, first["task_id"])
    second = process_image(server, jpeg_bytes(120, 80), "resize", "same-name.jpg").json()
    assert wait_done(server, second["task_id"])["result"] == "processed/same-name.jpg"
    image = server.client.get("/processed/same-name.jpg")
    assert image_info(image.content)[1:3] == (100, 100)


def test_a_processed_path_is_not_found_until_done_or_for_an_unknown_name(idle: Server) -> None:
    process_image(idle, jpeg_bytes(64, 48), "grayscale", "waiting.jpg")
    for name in ("waiting.jpg", "never-uploaded.jpg"):
        response = idle.client.get(f"/processed/{name}")
        assert response.status_code == 404 and response.json() == {"detail": "Not Found"}
