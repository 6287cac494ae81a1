"""Each CPU runtime imgq runs a shipped model on gives the reference's numbers (PSNR ≥ 50 dB):
PyTorch for Real-ESRGAN (the exact ncnn→PyTorch conversion), ncnn itself for Real-CUGAN; and the
whole upscale of Real-CUGAN equals what the reference program computes around ncnn."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from imgq.ai.cpu_nets import NetCache
from imgq.ai.descriptors import SHIPPED
from imgq.ai.ncnn_runtime import CUGAN_ALIGN, CUGAN_PREPADDING, NcnnNet
from imgq.ai.openvino_runtime import OpenVinoNet
from imgq.ai.upscale import upscale_array
from tests.integration.ai._support import IN_CI, scene

EXACT_DB = 50.0
# Building x4plus three ways (PyTorch, OpenVINO, ncnn) takes a while on a busy 2-core machine.
pytestmark = pytest.mark.timeout(900)


def need(*packages: str) -> None:
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing and IN_CI:
        pytest.fail(f"{', '.join(missing)} not installed; CI must run these tests")
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def photo_chw(h: int, w: int, seed: int = 2) -> np.ndarray:
    return np.ascontiguousarray(scene(h, w, seed).transpose(2, 0, 1).astype(np.float32) / 255)


@pytest.mark.parametrize("name", ["realesrgan-x4plus", "realesrgan-x4plus-anime",
                                  "realesr-animevideov3"])
def test_openvino_and_ncnn_match_the_pytorch_reference(name: str) -> None:
    need("torch", "spandrel", "ncnn", "openvino")
    import torch

    from imgq.ai.catalog import get_model

    descriptor = SHIPPED.get(name)
    image = photo_chw(28, 36)
    with torch.inference_mode():
        reference = get_model(name, "cpu", "fp32").module(torch.from_numpy(image)[None])[0]
    reference = reference.clamp(0, 1).numpy()
    stem = descriptor.source.location()
    for net in (OpenVinoNet(stem, threads=2), NcnnNet(stem, threads=2)):
        out = np.clip(net.forward(image), 0, 1)
        assert out.shape == reference.shape == (3, 112, 144)
        assert psnr(out, reference) >= EXACT_DB, type(net).__name__


@pytest.mark.parametrize("name", ["realcugan-x2", "realcugan-x3", "realcugan-x4",
                                  "realcugan-pro-x2", "realcugan-x2-denoise1",
                                  "realcugan-pro-x3-conservative"])
def test_openvino_runs_real_cugan_as_ncnn_does(name: str) -> None:
    need("ncnn", "openvino")
    descriptor = SHIPPED.get(name)
    stem = descriptor.source.location()
    image = photo_chw(64, 72)  # already "padded": the raw networks crop their context away
    reference = NcnnNet(stem, threads=2).forward(image)
    out = OpenVinoNet(stem, threads=2, min_side=40).forward(image)
    assert out.shape == reference.shape
    assert psnr(out, reference) >= EXACT_DB


def reference_program_tile(name: str, image: np.ndarray) -> np.ndarray:
    """realcugan-ncnn-vulkan's CPU path for one tile holding the whole image, in numpy:
    /255, reflect border of `prepadding` (plus alignment), ncnn, ×4 residual, ×255 + 0.5."""
    descriptor = SHIPPED.get(name)
    s = descriptor.scale
    p, align = CUGAN_PREPADDING[s], CUGAN_ALIGN[s]
    h, w = image.shape[:2]
    chw = image.transpose(2, 0, 1).astype(np.float32) * (1 / 255)
    padded = np.pad(chw, ((0, 0), (p, p + (-h) % align), (p, p + (-w) % align)), mode="reflect")
    out = NcnnNet(descriptor.source.location(), threads=2).forward(padded)[:, : h * s, : w * s]
    if s == 4:
        out = out + np.repeat(np.repeat(chw, 4, axis=1), 4, axis=2)
    pixels = np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)  # to_pixels truncates
    return pixels.transpose(1, 2, 0)


@pytest.mark.parametrize(("name", "runtime"), [("realcugan-x2", "ncnn"),
                                               ("realcugan-x3", "openvino"),
                                               ("realcugan-x4", "ncnn"),
                                               ("realcugan-x4", "openvino")])
def test_real_cugan_upscale_equals_the_reference_program(name: str, runtime: str) -> None:
    need("ncnn", "openvino")
    image = scene(45, 38, seed=7)
    out = upscale_array(image, name, device="cpu", runtime=runtime, tile=64)
    expected = reference_program_tile(name, image)
    scale = SHIPPED.get(name).scale
    assert out.shape == expected.shape == (45 * scale, 38 * scale, 3)
    assert np.abs(out.astype(np.int16) - expected.astype(np.int16)).max() <= 1


@pytest.mark.parametrize("runtime", ["openvino", "ncnn"])
def test_the_numpy_path_upscales_like_the_torch_path(runtime: str) -> None:
    need("torch", "spandrel", "ncnn", "openvino")
    image = scene(40, 52, seed=3)
    ours = upscale_array(image, "realesr-animevideov3", device="cpu", runtime=runtime, tile=32)
    reference = upscale_array(image, "realesr-animevideov3", device="cpu", runtime="torch",
                              tile=32)
    assert ours.shape == reference.shape == (160, 208, 3)
    assert psnr(ours, reference, 255.0) >= EXACT_DB
    assert np.abs(ours.astype(np.int16) - reference.astype(np.int16)).max() <= 1


def test_nets_are_built_once_and_the_cache_is_bounded() -> None:
    need("ncnn")
    cache = NetCache(size=2)
    first = cache.get(SHIPPED.get("realesr-animevideov3"), "ncnn", 1)
    assert cache.get(SHIPPED.get("realesr-animevideov3"), "ncnn", 1) is first
    cache.get(SHIPPED.get("realcugan-x2"), "ncnn", 1)
    cache.get(SHIPPED.get("realcugan-x3"), "ncnn", 1)
    assert cache.get(SHIPPED.get("realesr-animevideov3"), "ncnn", 1) is not first
