"""The Backend AI document's own JavaScript client ("Frontend Integration Example"), run as
written with Node against a real `imgq serve`: it gets an image for image_generation (a tiny
diffusers model installed in the models folder), style_transfer, background_removal and
image_enhancement."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import pyvips

from tests.conftest import IN_CI
from tests.fixtures.images import pattern
from tests.fixtures.server import Server

JS = Path(__file__).resolve().parents[1] / "fixtures" / "js"
TASKS = ("image_generation", "style_transfer", "background_removal", "image_enhancement")
pytestmark = pytest.mark.timeout(600)


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed: the document's client is JavaScript"
    absent = [p for p in ("torch", "diffusers", "transformers", "onnxruntime")
              if importlib.util.find_spec(p) is None]
    return f"{', '.join(absent)} not installed (the AI and generate extras)" if absent else None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    problem = _missing()
    if problem:
        if IN_CI:
            pytest.fail(f"{problem}; CI must run this test", pytrace=False)
        pytest.skip(problem)
    from tests.fixtures.tiny_diffusion import build_tiny_pipeline

    models = tmp_path / "models"
    build_tiny_pipeline(models / "generate" / "tiny-sd")
    (tmp_path / "logs").mkdir()
    started = Server(tmp_path / "data", tmp_path / "logs", {})
    try:
        yield started.start(workers=2, ai_models_dir=models, ai_device="cpu",
                            ai_max_pixels=64 * 64)
    finally:
        started.close()


def test_the_documents_client_gets_an_image_for_each_task_type(server: Server,
                                                              tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    pixels = (pattern(48, 32) * 255).round().astype("uint8")
    pyvips.Image.new_from_array(pixels, interpretation="srgb").pngsave(str(photo))
    out = tmp_path / "out"
    out.mkdir()
    run = subprocess.run(["node", str(JS / "run_backend_ai_client.mjs"), server.url, str(out),
                          str(photo), *TASKS], capture_output=True, text=True, timeout=540)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + server.log_text()[-3000:]
    assert run.stdout.count("Task created:") == len(TASKS)
    sizes = {}
    for task in TASKS:
        image = pyvips.Image.new_from_file(str(out / f"{task}.png"))
        sizes[task] = (image.width, image.height, image.bands)
        assert image.avg() > 0 or task == "background_removal"
    assert sizes["image_generation"] == (512, 512, 3)  # the API's documented default size
    assert sizes["style_transfer"] == (48, 32, 3)
    assert sizes["background_removal"] == (48, 32, 4)  # the cut-out has alpha
    assert sizes["image_enhancement"][:2] == (192, 128)  # ×4 by default
    generated = pyvips.Image.new_from_file(str(out / "image_generation.png"))
    assert generated.deviate() > 1  # a picture, not a blank canvas
