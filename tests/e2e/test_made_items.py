"""An item whose image is made by its first step (a `generate` job, sent with a prompt and no
files) on the jobs page: what a person sees before the result exists, and after."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvips

from tests.e2e.server import Server, running_server
from tests.e2e.test_web import card, wait_status

PROMPT = "a lighthouse at dusk"
STEPS = [{"op": "generate", "prompt": PROMPT, "width": 128, "height": 96, "steps": 2,
          "seed": 3}]

for _package in ("torch", "diffusers", "transformers"):
    pytest.importorskip(_package, reason="generate needs the generate extra")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fixtures.tiny_diffusion import build_tiny_pipeline

    root = tmp_path_factory.mktemp("models")
    build_tiny_pipeline(root / "generate" / "tiny-sd")
    return root


def submit(server: Server) -> str:
    created = server.client.post("/v1/jobs", data={"pipeline": json.dumps(STEPS)},
                                 files={"_": (None, b"")})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def media_pixels(page: Any) -> np.ndarray:
    shot = card(page, 0).locator(".media").screenshot()
    return np.asarray(pyvips.Image.new_from_buffer(shot, "")[0:3].numpy(), dtype=np.float64)


def blocks(pixels: np.ndarray, across: int = 16, down: int = 12) -> np.ndarray:
    """The mean colour of each cell of an across × down grid."""
    h, w = pixels.shape[:2]
    rows = np.array_split(np.arange(h), down)
    cols = np.array_split(np.arange(w), across)
    return np.array([[pixels[r[0]:r[-1] + 1, c[0]:c[-1] + 1].mean(axis=(0, 1)) for c in cols]
                     for r in rows])


def test_before_its_result_the_card_names_the_prompt_not_a_broken_picture(
        page: Any, models: Path, tmp_path: Path) -> None:
    with running_server(tmp_path / "data", "--no-workers",
                        IMGQ_AI_MODELS_DIR=str(models), IMGQ_AI_DEVICE="cpu") as server:
        job = submit(server)
        page.goto(f"{server.url}/jobs?ids={job}")
        wait_status(page, 0, "queued")
        media = card(page, 0).locator(".media")
        # What a person reads in the picture's place: what is being made, from which prompt.
        lines = [line for line in media.inner_text().split("\n") if line.strip()]
        assert lines == ["IMAGE FROM A PROMPT", f"“{PROMPT}”"]
        broken = page.evaluate("""() => [...document.querySelectorAll('.card .media img')]
            .filter((img) => img.checkVisibility() && !(img.complete && img.naturalWidth > 0))
            .length""")
        assert broken == 0
        text = media.get_by_text(PROMPT)
        assert text.is_visible() and text.bounding_box()["width"] > 50


def test_once_done_the_card_shows_the_generated_image(page: Any, models: Path,
                                                      tmp_path: Path) -> None:
    with running_server(tmp_path / "data", IMGQ_WORKERS="1",
                        IMGQ_AI_MODELS_DIR=str(models), IMGQ_AI_DEVICE="cpu") as server:
        job = submit(server)
        page.goto(f"{server.url}/jobs?ids={job}")
        # The worker loads torch and the model first: wait on the server (which allows for a
        # loaded machine), then the page has seconds to follow.
        assert server.wait_finished(job)["status"] == "succeeded"
        wait_status(page, 0, "succeeded")
        page.wait_for_function("""() => { const img = document.querySelector('.card .thumb');
            return img && !img.hidden && img.complete && img.naturalWidth > 0; }""")
        (item,) = server.job(job)["items"]
        result = pyvips.Image.new_from_buffer(server.client.get(item["result_url"]).content, "")
        shot = media_pixels(page)
        # The picture sits in the middle of the 4:3 box, as large as fits (object-fit:
        # contain): compare that part of the screen with the result scaled to it.
        height, width = shot.shape[:2]
        scale = min(width / result.width, height / result.height)
        w, h = int(result.width * scale), int(result.height * scale)
        x, y = (width - w) // 2, (height - h) // 2
        seen = blocks(shot[y:y + h, x:x + w])
        expected = blocks(np.asarray(result.numpy(), dtype=np.float64))
        assert shot.std() > 5, "a picture, not a flat placeholder"
        # Block means: the browser's and the server's scaling differ in detail, not in what
        # a person sees where.
        correlation = np.corrcoef(seen.ravel(), expected.ravel())[0, 1]
        assert correlation > 0.95, correlation
        assert float(np.abs(seen - expected).mean()) < 10, float(np.abs(seen - expected).mean())
        assert not card(page, 0).get_by_text(PROMPT).is_visible()  # the placeholder is gone
        alt = card(page, 0).locator(".thumb").get_attribute("alt")
        assert alt is not None and PROMPT in alt
