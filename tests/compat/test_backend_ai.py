"""Backend AI: POST /api/v1/tasks/create/, GET .../{task_id}/status/,
GET .../{task_id}/result/, POST .../{task_id}/cancel/, as its README documents them."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import numpy as np
import pytest

from tests.fixtures.encoded import image_info, jpeg_bytes, png_bytes
from tests.fixtures.server import Server
from tests.compat.conftest import needs_operation
from tests.fixtures.waiting import wait_for

API = "/api/v1/tasks"
STATUSES = ("PENDING", "PROCESSING", "SUCCESS", "FAILURE", "RETRY")
UNKNOWN = "550e8400-e29b-41d4-a716-446655440000"


def create(server: Server, task_type: str, prompt: str | None = "beautiful sunset over mountains",
           image: bytes | None = None, parameters: dict[str, Any] | str | None = None) -> Any:
    data: dict[str, str] = {"task_type": task_type}
    if prompt is not None:
        data["prompt"] = prompt
    if parameters is not None:
        data["parameters"] = parameters if isinstance(parameters, str) else json.dumps(parameters)
    # The old system's frontend always posts FormData (multipart), with or without an image.
    files = {"image": ("photo.png", image, "image/png")} if image is not None else {
        "_": (None, b"")}
    return server.client.post(f"{API}/create/", data=data, files=files)


def status_of(server: Server, task_id: str) -> dict[str, Any]:
    response = server.client.get(f"{API}/{task_id}/status/")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def wait_finished(server: Server, task_id: str) -> dict[str, Any]:
    return wait_for(lambda: status_of(server, task_id),
                    lambda body: body["status"] in ("SUCCESS", "FAILURE"), what="SUCCESS")


def assert_created(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "PENDING" and body["message"] == "Task queued successfully"
    assert isinstance(body["task_id"], str)
    assert body["created_at"].endswith("Z")
    datetime.fromisoformat(body["created_at"])
    return body  # type: ignore[no-any-return]


# -- invalid input, unknown tasks, missing models ---------------------------------------------
def test_invalid_input_answers_400_with_the_fields_at_fault(server: Server) -> None:
    no_prompt = create(server, "image_enhancement", prompt=None, image=png_bytes(16, 16))
    assert no_prompt.status_code == 400
    assert no_prompt.json()["error"] == "Invalid input"
    assert no_prompt.json()["details"]["prompt"] == ["This field is required."]

    bad_type = create(server, "colourise", image=png_bytes(16, 16))
    assert bad_type.status_code == 400 and "task_type" in bad_type.json()["details"]

    bad_json = create(server, "background_removal", image=png_bytes(16, 16),
                      parameters="{not json")
    assert bad_json.status_code == 400 and "parameters" in bad_json.json()["details"]

    no_image = create(server, "background_removal")
    assert no_image.status_code == 400 and "image" in no_image.json()["details"]

    # Django REST also took JSON bodies (tasks without an image).
    as_json = server.client.post(f"{API}/create/", json={"task_type": "image_generation",
                                                         "parameters": {"width": 512}})
    assert as_json.status_code == 400
    assert as_json.json() == {"error": "Invalid input",
                              "details": {"prompt": ["This field is required."]}}


def test_an_unknown_task_answers_404(server: Server) -> None:
    for method, suffix in (("GET", "status/"), ("GET", "result/"), ("POST", "cancel/")):
        response = server.client.request(method, f"{API}/{UNKNOWN}/{suffix}")
        assert response.status_code == 404
        assert response.json() == {"error": "Task not found"}


@pytest.mark.parametrize("task_type", ["image_generation", "face_swap"])
def test_a_task_type_without_a_model_says_which_model_is_missing_and_how_to_add_it(
    server: Server, operations: set[str], task_type: str
) -> None:
    if task_type in operations:
        pytest.skip(f"a plug-in provides {task_type} here")
    before = server.jobs_total()
    image = None if task_type == "image_generation" else png_bytes(32, 32)
    response = create(server, task_type, image=image, parameters={"width": 512, "height": 512})
    assert 400 <= response.status_code < 500
    body = response.json()
    assert body["error"] == "Model not installed"
    assert body["details"]["task_type"] == task_type
    assert "docs/ai.md" in body["details"]["how_to_fix"]
    assert server.jobs_total() == before  # never a mock result


@pytest.mark.parametrize(("task_type", "operation"), [("image_enhancement", "upscale"),
                                                      ("background_removal", "remove_background")])
def test_a_shipped_model_that_is_not_installed_answers_503(
    server: Server, operations: set[str], task_type: str, operation: str
) -> None:
    if operation in operations:
        pytest.skip(f"{operation} is installed here")
    response = create(server, task_type, image=png_bytes(32, 32))
    assert response.status_code == 503
    assert response.json()["error"] == "Model not installed"
    assert response.json()["details"]["operation"] == operation


# -- whole tasks (need the AI operations) -----------------------------------------------------
def test_image_enhancement_runs_through_to_the_result_image(server: Server,
                                                            operations: set[str]) -> None:
    needs_operation(operations, "upscale")
    created = assert_created(create(server, "image_enhancement", prompt="sharper please",
                                    image=jpeg_bytes(24, 16), parameters={"scale": 2}))
    early = server.client.get(f"{API}/{created['task_id']}/result/")
    if early.status_code != 200:  # not done yet: the old system answers 400 until SUCCESS
        assert early.status_code == 400
        assert early.json()["error"].startswith("Task not completed. Status: ")

    status = wait_finished(server, created["task_id"])
    assert status["status"] == "SUCCESS", status
    assert status["progress"] == 100 and status["error_message"] is None
    assert isinstance(status["processing_time"], float)
    for field in ("created_at", "started_at", "completed_at"):
        datetime.fromisoformat(status[field])

    result = server.client.get(f"{API}/{created['task_id']}/result/")
    assert result.status_code == 200
    body = result.json()
    assert body["status"] == "SUCCESS" and body["prompt"] == "sharper please"
    assert body["result"]["image_url"] == body["image_url"]
    assert isinstance(body["result_data"], dict) and isinstance(body["processing_time"], float)
    image = server.client.get(body["image_url"])
    assert image.status_code == 200
    assert image_info(image.content)[:3] == ("png", 48, 32)

    again = server.client.post(f"{API}/{created['task_id']}/cancel/")
    assert again.status_code == 400 and again.json() == {"error": "Task already completed"}


def test_background_removal_gives_a_png_with_alpha(server: Server, operations: set[str]) -> None:
    needs_operation(operations, "remove_background")
    created = assert_created(create(server, "background_removal", prompt="remove it",
                                    image=jpeg_bytes(64, 48)))
    status = wait_finished(server, created["task_id"])
    assert status["status"] == "SUCCESS", status
    body = server.client.get(f"{API}/{created['task_id']}/result/").json()
    fmt, width, height, bands = image_info(server.client.get(body["image_url"]).content)
    assert (fmt, width, height, bands) == ("png", 64, 48, 4)


def test_a_queued_task_can_be_cancelled(idle: Server) -> None:
    if "upscale" not in idle.operations():
        pytest.skip("the 'upscale' operation is not installed on this server")
    created = assert_created(create(idle, "image_enhancement", image=jpeg_bytes(24, 16)))
    status = status_of(idle, created["task_id"])
    assert status["status"] == "PENDING" and status["progress"] == 0
    result = idle.client.get(f"{API}/{created['task_id']}/result/")
    assert result.status_code == 400
    assert result.json() == {"error": "Task not completed. Status: PENDING"}

    cancel = idle.client.post(f"{API}/{created['task_id']}/cancel/")
    assert cancel.status_code == 200 and cancel.json() == {"message": "Task cancelled"}
    status = status_of(idle, created["task_id"])
    assert status["status"] == "FAILURE" and status["error_message"] == "Cancelled by user"
    assert status["status"] in STATUSES


def test_an_ordinary_photo_is_accepted_for_enhancement_on_a_cpu(idle: Server) -> None:
    if "upscale" not in idle.operations():
        pytest.skip("the 'upscale' operation is not installed on this server")
    created = assert_created(create(idle, "image_enhancement", image=jpeg_bytes(631, 421)))
    assert status_of(idle, created["task_id"])["status"] == "PENDING"


def test_style_transfer_takes_the_seeds_parameters_and_a_style_image(
        server: Server, operations: set[str]) -> None:
    needs_operation(operations, "style_transfer")
    photo = png_bytes(96, 64)
    full = assert_created(create(server, "style_transfer", prompt="van gogh", image=photo,
                                 parameters={"style": 7, "strength": 1.0}))
    none = assert_created(create(server, "style_transfer", prompt="van gogh", image=photo,
                                 parameters={"style": 7, "strength": 0}))
    styled = {}
    for name, task in (("full", full), ("none", none)):
        assert wait_finished(server, task["task_id"])["status"] == "SUCCESS"
        body = server.client.get(f"{API}/{task['task_id']}/result/").json()
        styled[name] = pixels(server.client.get(body["image_url"]).content)
    original = pixels(photo)
    assert styled["full"].shape == original.shape
    assert np.abs(styled["none"] - original).mean() < 1.0  # strength 0: the photo as it was
    assert np.abs(styled["full"] - original).mean() > 15  # strength 1: styled

    files = {"image": ("photo.png", photo, "image/png"),
             "style_image": ("painting.png", png_bytes(48, 48), "image/png")}
    own = server.client.post(f"{API}/create/", files=files, data={
        "prompt": "in the style of my painting", "task_type": "style_transfer"})
    task = assert_created(own)
    assert wait_finished(server, task["task_id"])["status"] == "SUCCESS"
    body = server.client.get(f"{API}/{task['task_id']}/result/").json()
    assert body["result"]["metadata"]["pipeline"][0]["style_image"] == "style_image"
    assert pixels(server.client.get(body["image_url"]).content).shape == original.shape


def pixels(body: bytes) -> np.ndarray:
    import pyvips

    image = pyvips.Image.new_from_buffer(body, "")
    return np.asarray(image.numpy(), dtype=np.float32)


# -- face_swap, with the face models installed --------------------------------------------------
@pytest.fixture(scope="module")
def faces_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An `imgq serve` whose models folder holds tiny stand-ins for InsightFace's three files
    (tests/fixtures/tiny_faces.py: the real files' inputs and outputs)."""
    from tests.compat.conftest import start_server
    from tests.conftest import IN_CI

    missing = [p for p in ("onnx", "onnxruntime") if importlib.util.find_spec(p) is None]
    if missing:
        reason = f"{', '.join(missing)} not installed: face_swap needs them"
        if IN_CI:
            pytest.fail(f"{reason}; CI must run this test", pytrace=False)
        pytest.skip(reason)
    from tests.fixtures.tiny_faces import build_face_models

    models = tmp_path_factory.mktemp("face-models")
    build_face_models(models)
    started = start_server(tmp_path_factory, "compat-faces", workers=1, ai_models_dir=models,
                           ai_device="cpu")
    yield started
    started.close()


def test_face_swap_puts_the_source_images_face_into_the_image(faces_server: Server) -> None:
    from tests.fixtures.tiny_faces import face_centre, face_picture

    server = faces_server
    group = face_picture(640, 480, [(8, 5, 255)], seed=1)
    me = face_picture(640, 480, [(12, 6, 255)], seed=2)

    def send(source: np.ndarray | None) -> Any:
        files = {"image": ("group.png", encode_png(group), "image/png")}
        if source is not None:
            files["source_image"] = ("me.png", encode_png(source), "image/png")
        return server.client.post(f"{API}/create/", files=files, data={
            "prompt": "swap", "task_type": "face_swap",
            "parameters": json.dumps({"blend_ratio": 1.0})})

    created = assert_created(send(me))
    status = wait_finished(server, created["task_id"])
    assert status["status"] == "SUCCESS", status
    body = server.client.get(f"{API}/{created['task_id']}/result/").json()
    assert body["task_type"] == "face_swap"
    assert body["result"]["metadata"]["faces_swapped"] == 1
    result = pixels(server.client.get(body["image_url"]).content)
    x, y = (int(v) for v in face_centre(8, 5))
    face = (slice(y - 8, y + 9), slice(x - 8, x + 9))
    assert np.abs(result[face] - group[face]).mean() > 20  # the face is another one now
    assert np.array_equal(result[:, :120], group[:, :120])  # far from it, nothing moved
    assert np.array_equal(result[:, 420:], group[:, 420:])

    without = send(None)  # what the document's own client sends: no source_image
    assert without.status_code == 400
    assert without.json()["details"] == {"source_image": [
        "face_swap needs a source_image: the picture whose face is put into image."]}

    faceless = assert_created(send(face_picture(640, 480, [], seed=3)))
    status = wait_finished(server, faceless["task_id"])
    assert status["status"] == "FAILURE"
    assert status["error_message"].startswith("no face found in the source picture")


def encode_png(array: np.ndarray) -> bytes:
    import pyvips

    return bytes(pyvips.Image.new_from_array(array, interpretation="srgb").pngsave_buffer())
