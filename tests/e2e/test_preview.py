"""What a person sees before and after: the before/after slider moves the split on screen, and
the page shows the estimated AI time before anything is uploaded."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyvips

from imgq.ai.costs import CostBook, cost_key, covered_pixels
from imgq.ai.descriptors import SHIPPED
from imgq.ai.estimate import describe_estimate
from imgq.config import load_settings
from tests.e2e.server import Server, running_server, shared_server, write_picture
from tests.e2e.test_web import card, upload, wait_status


def colourfulness(png: bytes, left: float, right: float) -> float:
    """Mean spread between the largest and smallest channel over a vertical band of a
    screenshot (0 = grey): where the original (colour) shows, and where the grey result does."""
    shot = pyvips.Image.new_from_buffer(png, "")[0:3]
    x0, x1 = int(shot.width * left), int(shot.width * right)
    band = shot.crop(x0, shot.height // 5, x1 - x0, shot.height * 3 // 5)
    channels = [band[i] for i in range(3)]
    high = channels[0].maxpair(channels[1]).maxpair(channels[2])
    low = channels[0].minpair(channels[1]).minpair(channels[2])
    return float((high - low).avg())


def test_the_slider_moves_the_split_between_original_and_result(page: Any,
                                                                 tmp_path: Path) -> None:
    server = shared_server("workers")
    photo = write_picture(tmp_path / "colours.png", 640, 480, seed=2)
    upload(page, server, [photo], "grayscale")
    wait_status(page, 0, "succeeded")
    first = card(page, 0)
    page.wait_for_function("""() => [...document.querySelectorAll('.card[data-index="0"] .compare img')]
        .every((img) => img.complete && img.naturalWidth > 0)""")
    media = first.locator(".media")
    slider = first.locator(".slider")
    slider.focus()

    page.keyboard.press("End")  # all "before": the colour original
    page.wait_for_timeout(100)
    original = media.screenshot()
    page.keyboard.press("Home")  # all "after": the grey result
    page.wait_for_timeout(100)
    result = media.screenshot()
    for _ in range(5):  # halfway: original on the left, result on the right
        page.keyboard.press("PageUp")
    page.wait_for_timeout(100)
    halfway = media.screenshot()

    assert colourfulness(original, 0.1, 0.9) > 20, "the original should show at 100 %"
    assert colourfulness(result, 0.1, 0.9) < 3, "the grey result should show at 0 %"
    assert original != result
    split = int(slider.input_value())
    assert 20 <= split <= 80, split
    left, right = split / 100 - 0.12, split / 100 + 0.12
    assert colourfulness(halfway, 0.05, left) > 20, "left of the split: the original"
    assert colourfulness(halfway, right, 0.95) < 3, "right of the split: the result"


def test_the_page_shows_the_ai_time_before_uploading(page: Any, tmp_path: Path) -> None:
    costs = tmp_path / "costs.json"
    x4plus = SHIPPED.get("realesrgan-x4plus")
    per_pixel = 1.2e-4
    threads = load_settings().ai_threads  # what the server's AI worker would use
    CostBook(costs).record(cost_key(x4plus, "cpu", threads), 10_000, 10_000 * per_pixel)
    photo = write_picture(tmp_path / "photo480.png", 640, 480)
    small = write_picture(tmp_path / "small.png", 160, 120, seed=3)
    with running_server(tmp_path / "data", "--no-workers", IMGQ_AI_COSTS_FILE=str(costs),
                        IMGQ_AI_DEVICE="cpu") as server:
        _choose(page, server, [photo, small], "upscale-4-sharp")
        one = per_pixel * covered_pixels(640, 480, x4plus)
        two = per_pixel * covered_pixels(160, 120, x4plus)
        estimate = page.locator("#estimate")
        estimate.wait_for(state="visible")
        assert estimate.inner_text().startswith(f"AI work: {describe_estimate(one + two)} on "
                                                "this server")
        assert "first guess" not in estimate.inner_text()
        files = page.locator("#file-list .file .file-estimate")
        page.wait_for_function("() => (document.querySelectorAll('.file-estimate')[1]?.textContent ?? '') != ''")
        assert files.nth(0).inner_text() == f" · AI {describe_estimate(one)}"
        assert files.nth(1).inner_text() == f" · AI {describe_estimate(two)}"

        page.click("label[for=preset-grayscale]")  # no AI step: no estimate
        estimate.wait_for(state="hidden")
        page.click("label[for=preset-upscale-4-sharp]")
        estimate.wait_for(state="visible")
        page.click("#submit")  # the job shows the same figure while it waits
        page.wait_for_url(re.compile(r"/jobs\?ids="))
        stage = card(page, 0).locator(".stage")
        stage.wait_for(state="visible")
        assert stage.inner_text() == (f"Waiting for a worker · AI {describe_estimate(one)} "
                                      "once it starts")


def _choose(page: Any, server: Server, files: list[Path], preset: str) -> None:
    page.goto(server.url + "/")
    page.wait_for_selector(f"label[for=preset-{preset}]")
    page.set_input_files("#file-input", [str(f) for f in files])
    page.wait_for_function(f"() => document.querySelectorAll('#file-list .file').length == {len(files)}")
    page.click(f"label[for=preset-{preset}]")
