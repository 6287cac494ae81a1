"""The web page in a real browser: upload, live progress, preview, downloads, errors, cancel,
the expiry countdown, and reloading a shared jobs URL."""

from __future__ import annotations

import os
import re
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import Server, shared_server, write_broken_png, write_picture

# The README's screenshots: refreshed in docs/ with IMGQ_UPDATE_SCREENSHOTS=1, otherwise taken
# into a temporary folder, so that a test run leaves the working tree as it found it.
DOCS = (Path(__file__).resolve().parents[2] / "docs" if os.environ.get("IMGQ_UPDATE_SCREENSHOTS")
        else Path(tempfile.mkdtemp(prefix="imgq-screenshots-")))


@pytest.fixture(scope="module")
def server() -> Server:
    return shared_server("workers")


@pytest.fixture(scope="module")
def idle() -> Server:
    return shared_server("idle")


def card(page: Any, index: int) -> Any:
    return page.locator(f'.card[data-index="{index}"]')


def wait_status(page: Any, index: int, status: str) -> None:
    page.wait_for_selector(f'.card[data-index="{index}"][data-status="{status}"]')


def upload(page: Any, server: Server, files: list[Path], preset: str = "grayscale",
           fmt: str = "", screenshot: Path | None = None) -> str:
    page.goto(server.url + "/")
    page.wait_for_selector(f"label[for=preset-{preset}]")
    page.set_input_files("#file-input", [str(f) for f in files])
    page.wait_for_function(f"() => document.querySelectorAll('#file-list .file').length == {len(files)}")
    page.click(f"label[for=preset-{preset}]")
    page.select_option("#format", fmt)
    if screenshot:
        page.wait_for_timeout(300)  # the thumbnails
        page.screenshot(path=str(screenshot), full_page=True)
    page.click("#submit")
    page.wait_for_url(re.compile(r"/jobs\?ids="))
    return page.url.split("ids=", 1)[1]


def test_two_images_with_a_preset_reach_done_and_download(page: Any, server: Server,
                                                          tmp_path: Path) -> None:
    files = [write_picture(tmp_path / f"photo-{i}.png", 720, 480, seed=i) for i in range(2)]
    DOCS.mkdir(exist_ok=True)
    upload(page, server, files, "sharpen", "webp", screenshot=DOCS / "screenshot-upload.png")
    for index in (0, 1):
        wait_status(page, index, "succeeded")
        assert card(page, index).locator(".item-status").inner_text() == "Done"
    first = card(page, 0)
    # (the before/after slider is checked on its pixels in test_preview.py)
    with page.expect_download() as info:
        first.locator(".download").click()
    saved = tmp_path / info.value.suggested_filename
    info.value.save_as(saved)
    assert saved.name == "photo-0.webp" and saved.read_bytes()[8:12] == b"WEBP"
    with page.expect_download() as info:
        page.locator(".job .zip").click()
    archive = tmp_path / "all.zip"
    info.value.save_as(archive)
    assert sorted(zipfile.ZipFile(archive).namelist()) == ["photo-0.webp", "photo-1.webp"]

    # The address can be reloaded or shared: the same cards come back, done.
    page.reload()
    wait_status(page, 1, "succeeded")
    assert card(page, 1).locator(".download").get_attribute("href").endswith("/items/1/result")
    shared = page.context.new_page()
    shared.goto(page.url + "&transport=poll")  # the polling fallback shows the same
    shared.wait_for_selector('.card[data-index="0"][data-status="succeeded"]')
    assert shared.locator(".job").get_attribute("data-transport") is None  # finished: no polling


def test_a_bad_file_shows_its_error_while_the_good_ones_finish(page: Any, server: Server,
                                                               tmp_path: Path) -> None:
    files = [write_picture(tmp_path / "sunset.png", 720, 480, seed=4),
             write_broken_png(tmp_path / "damaged.png"),
             write_picture(tmp_path / "harbour.png", 720, 480, seed=7)]
    upload(page, server, files, "edge_enhance")
    wait_status(page, 0, "succeeded")
    wait_status(page, 2, "succeeded")
    wait_status(page, 1, "failed")
    error = card(page, 1).locator(".item-error")
    assert error.is_visible() and "truncated or corrupt" in error.inner_text()  # the input is blamed
    assert card(page, 1).locator(".download").is_hidden()
    assert page.locator(".job .job-status").inner_text() == "Partly done"
    page.wait_for_function("""() => [...document.querySelectorAll('.compare img, .thumb')]
        .every((img) => img.complete)""")
    page.wait_for_timeout(300)
    page.screenshot(path=str(DOCS / "screenshot-jobs.png"), full_page=True)


def test_cancel_stops_waiting_images(page: Any, idle: Server, tmp_path: Path) -> None:
    files = [write_picture(tmp_path / f"p{i}.png", 200, 150, seed=i) for i in range(2)]
    upload(page, idle, files)
    wait_status(page, 0, "queued")
    assert card(page, 0).locator(".stage").inner_text() == "Waiting for a worker"
    page.get_by_role("button", name="Cancel").click()
    wait_status(page, 0, "cancelled")
    wait_status(page, 1, "cancelled")
    assert page.locator(".job .cancel").is_hidden()
    assert page.locator(".job .zip").is_hidden()


def test_expiry_counts_down_then_says_expired(page: Any, idle: Server, tmp_path: Path) -> None:
    image = write_picture(tmp_path / "a.png", 64, 64).read_bytes()
    response = httpx.post(f"{idle.url}/v1/jobs", files={"files": ("a.png", image)},
                          data={"pipeline": "grayscale", "ttl_seconds": "4"})
    job_id = response.json()["id"]
    page.goto(f"{idle.url}/jobs?ids={job_id}")
    expiry = page.locator(".job .expiry")
    page.wait_for_function("() => document.querySelector('.job .expiry')?.textContent.startsWith('Expires in')")
    assert re.fullmatch(r"Expires in [1-4]s", expiry.inner_text())
    started = time.monotonic()
    page.wait_for_function("() => document.querySelector('.job .expiry')?.textContent === 'Expired'")
    assert time.monotonic() - started < 6


def test_limits_are_checked_in_the_page_and_server_refusals_are_shown(
        page: Any, idle: Server, tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("just text")
    big = write_picture(tmp_path / "big.png", 600, 600, seed=3)  # over the 300 kB limit here
    small = [write_picture(tmp_path / f"s{i}.png", 40, 40, seed=i) for i in range(3)]
    page.goto(idle.url + "/")
    page.wait_for_selector("label[for=preset-grayscale]")
    page.set_input_files("#file-input", [str(text), str(big), *map(str, small)])
    page.wait_for_function("() => document.querySelectorAll('#file-list .file').length == 3")
    assert "not an image in a supported format" in page.locator(".file.bad").first.inner_text()
    assert "larger than the limit" in page.locator(".file.bad").nth(1).inner_text()
    assert "at most 3 images" in page.locator("#file-errors").inner_text()
    page.click("#submit")
    assert "marked in red" in page.locator("#form-error").inner_text()

    # Remove the bad ones with the keyboard, then build a pipeline the server refuses.
    for name in ("notes.png", "big.png"):
        page.get_by_role("button", name=f"Remove {name}").press("Enter")
    page.click("label[for=mode-custom]")
    page.select_option("#add-op", "blur")
    page.click("#add-step")
    page.locator(".step-card input[type=number]").first.fill("0")
    assert page.locator("#pipeline-text").inner_text() == "blur:radius=0"
    page.click("#submit")
    page.wait_for_selector("#form-error:not([hidden])")
    message = page.locator("#form-error").inner_text()
    assert "step 0 (blur): radius" in message
    assert page.url.endswith("/")
