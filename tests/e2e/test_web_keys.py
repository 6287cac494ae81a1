"""The web page on a server that needs API keys (IMGQ_AUTH=keys): it asks for the key, keeps
it in the browser, and uploads, follows (by polling: EventSource cannot send a key), previews
and downloads with it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import running_server, write_picture
from tests.fixtures.keys import create_key
from tests.fixtures.server import Server


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("keyed"), IMGQ_AUTH="keys") as server:
        yield server


def _enter_key(page: Any, key: str) -> None:
    page.wait_for_selector("#key-form:not([hidden])")
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")


def test_the_page_asks_for_a_key_then_uploads_previews_and_downloads_with_it(
        page: Any, keyed: Server, tmp_path: Path) -> None:
    key = create_key(keyed, "browser")
    page.goto(keyed.url + "/")
    page.wait_for_selector("#key-form:not([hidden])")
    assert "Authorization: Bearer" in page.inner_text("#key-message")
    _enter_key(page, "imgq_not-a-key")
    page.wait_for_function("() => document.querySelector('#key-message').textContent"
                           ".includes('unknown or was revoked')")
    _enter_key(page, key)
    page.wait_for_selector("label[for=preset-grayscale]")  # the operations loaded with the key
    assert page.evaluate("localStorage.getItem('imgq.apiKey')") == key

    files = [write_picture(tmp_path / "photo.png", 320, 240)]
    page.set_input_files("#file-input", [str(f) for f in files])
    page.click("label[for=preset-grayscale]")
    page.select_option("#format", "png")
    page.click("#submit")
    page.wait_for_url("**/jobs?ids=*")
    page.wait_for_selector('.card[data-index="0"][data-status="succeeded"]', timeout=60_000)
    page.wait_for_function("""() => [...document.querySelectorAll('.card .compare img')]
        .every((img) => img.src.startsWith('blob:') && img.complete && img.naturalWidth > 0)""")

    with page.expect_download() as info:
        page.locator('.card[data-index="0"] .download').click()
    saved = tmp_path / "saved.png"
    assert info.value.failure() is None, info.value.failure()
    info.value.save_as(saved)
    assert info.value.suggested_filename == "photo.png"
    assert saved.read_bytes().startswith(b"\x89PNG")

    # Without the key, the same job is not there for this browser's next visitor.
    job_id = page.url.split("ids=", 1)[1]
    assert keyed.client.get(f"/v1/jobs/{job_id}").status_code == 401
    other = create_key(keyed, "someone-else")
    assert keyed.client.get(f"/v1/jobs/{job_id}",
                            headers={"X-API-Key": other}).status_code == 404
