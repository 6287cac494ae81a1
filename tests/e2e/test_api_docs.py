"""/docs (Swagger UI) and /redoc in a browser that may reach nothing but imgq: they render the
operations from imgq's own copy of their assets. And image-api's front end, which was Swagger
UI: picking a filter there and pressing Execute applies that filter."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import pyvips

from tests.fixtures.waiting import wait_for
from tests.e2e.server import Server, picture, shared_server


@pytest.fixture(scope="module")
def server() -> Server:
    return shared_server("workers")


#: What a page needs to work; ReDoc's footer also shows its maker's logo, an image from its
#: CDN, whose absence changes nothing.
NEEDED = frozenset({"document", "script", "stylesheet", "fetch", "xhr", "font"})


@pytest.fixture
def offline(page: Any, server: Server) -> list[str]:
    """Every request to anywhere but imgq is refused, as with no internet; those for what a
    page needs to work are recorded."""
    own = urlsplit(server.url).netloc
    refused: list[str] = []

    def route(r: Any) -> None:
        if urlsplit(r.request.url).netloc == own or r.request.url.startswith("data:"):
            r.continue_()
        else:
            if r.request.resource_type in NEEDED:
                refused.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return refused


def test_swagger_ui_renders_every_api_without_the_internet(page: Any, server: Server,
                                                           offline: list[str]) -> None:
    page.goto(server.url + "/docs")
    page.wait_for_selector(".swagger-ui .opblock-tag")
    tags = page.locator(".opblock-tag").all_inner_texts()
    assert any(t.startswith("jobs") for t in tags)
    for system in ("AI Upscaler", "image-api", "Image Queue Demo", "Backend AI",
                   "FastAPI + Celery demo"):
        assert any(t.startswith(f"compat: {system}") for t in tags), (system, tags)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/v1/jobs" in paths and "/api/jobs/upload" in paths and "/process-job" in paths
    assert offline == []


def test_redoc_renders_the_operations_without_the_internet(page: Any, server: Server,
                                                           offline: list[str]) -> None:
    page.goto(server.url + "/redoc")
    page.get_by_role("heading", name="Upload images and apply a filter").first.wait_for()
    assert page.get_by_text("Asynchronous image processing").first.is_visible()
    assert offline == []


def _execute_process_job(page: Any, server: Server, filter_name: str, image: bytes) -> Any:
    """Swagger UI as a person uses it: open /process-job, Try it out, pick the filter, add a
    file (its form shows one file input to start with), Execute; returns the response."""
    page.goto(server.url + "/docs")
    block = page.locator(".opblock").filter(
        has=page.locator(".opblock-summary-path", has_text="/process-job"))
    block.locator(".opblock-summary").click()
    block.get_by_role("button", name="Try it out").click()
    block.locator('tr[data-param-name="filter"] select').select_option(filter_name)
    block.locator('input[type="file"]').first.set_input_files(
        files=[{"name": "photo.png", "mimeType": "image/png", "buffer": image}])
    with page.expect_response(lambda r: "/process-job" in r.url) as answer:
        block.get_by_role("button", name="Execute").click()
    return answer.value


def _grey(data: bytes) -> bool:
    image = pyvips.Image.new_from_buffer(data, "")
    pixels = np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8,
                        shape=(image.height, image.width, image.bands)).astype(int)
    if image.bands < 3:
        return True
    return bool(np.abs(pixels[..., 0] - pixels[..., 1]).max() <= 2
                and np.abs(pixels[..., 1] - pixels[..., 2]).max() <= 2)


@pytest.mark.parametrize(("filter_name", "grey"), [("grayscale", True), ("sharpen", False)])
def test_the_filter_picked_in_swagger_ui_is_the_one_applied(
        page: Any, server: Server, offline: list[str], filter_name: str, grey: bool) -> None:
    sent = bytes(picture(96, 64, seed=3).pngsave_buffer())
    response = _execute_process_job(page, server, filter_name, sent)
    request = response.request
    assert f"filter={filter_name}" in request.url
    assert b'name="filter"' not in (request.post_data_buffer or b"")
    body = json.loads(response.text())
    assert response.status == 200, body
    status = wait_for(lambda: httpx.get(f"{server.url}/status-job/{body['job_id']}").json(),
                      lambda s: s["all_ready"], what="the job finished")
    assert status["all_successful"], status
    result = httpx.get(server.url + status["results"][0]["image_url"])
    assert _grey(result.content) is grey
    assert offline == []
