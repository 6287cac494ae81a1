"""upscale_array: sizes and modes, 2× from a ×4 model, OOM halving, cancel, progress, fallback."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from ._support import require_torch, scene

require_torch()

import torch  # noqa: E402

from imgq.ai.errors import InferenceAborted, OutOfMemory  # noqa: E402
from imgq.ai.torch_upscale import TorchUpscaler  # noqa: E402
from imgq.ai.upscale import Upscaler, UpscaleOptions, upscale_array  # noqa: E402
from imgq.errors import InvalidParameters  # noqa: E402

FAST = "realesr-animevideov3"


def rgb(h: int = 20, w: int = 24) -> np.ndarray:
    return scene(h, w, seed=5)


@pytest.mark.parametrize(("make", "expected_shape", "dtype"), [
    (lambda: rgb(), (80, 96, 3), np.uint8),
    (lambda: np.dstack([rgb(), np.full((20, 24), 200, np.uint8)]), (80, 96, 4), np.uint8),
    (lambda: rgb()[:, :, 1], (80, 96), np.uint8),
    (lambda: rgb()[:, :, 1:2], (80, 96, 1), np.uint8),
    (lambda: np.dstack([rgb()[:, :, 0], rgb()[:, :, 2]]), (80, 96, 2), np.uint8),
    (lambda: rgb().astype(np.uint16) * 257, (80, 96, 3), np.uint16),
    (lambda: rgb().astype(np.float32) / 255, (80, 96, 3), np.float32),
])
@pytest.mark.parametrize("runtime", ["openvino", "ncnn", "torch"])
def test_output_keeps_the_input_mode_at_four_times_the_size(make, expected_shape, dtype,
                                                            runtime) -> None:
    out = upscale_array(make(), FAST, device="cpu", runtime=runtime)
    assert out.shape == expected_shape
    assert out.dtype == dtype


def test_sixteen_bit_output_uses_the_full_sixteen_bit_range() -> None:
    out8 = upscale_array(rgb(), FAST, device="cpu")
    out16 = upscale_array(rgb().astype(np.uint16) * 257, FAST, device="cpu")
    assert np.abs(out16 / 257.0 - out8).max() <= 1.0
    assert (out16 % 257 != 0).any()  # real 16-bit values, not 8-bit ones scaled up


@pytest.mark.parametrize("runtime", ["openvino", "torch"])
def test_alpha_plane_is_upscaled_separately_and_kept(runtime: str) -> None:
    alpha = np.zeros((20, 24), np.uint8)
    alpha[:, 12:] = 255
    out = upscale_array(np.dstack([rgb(), alpha]), FAST, device="cpu", runtime=runtime)
    assert (out[:, :40, 3] == 0).all() and (out[:, 56:, 3] == 255).all()


def test_grey_input_comes_back_grey_and_close_to_the_colour_result() -> None:
    grey = rgb()[:, :, 1]
    out = upscale_array(grey, FAST, device="cpu")
    from_rgb = upscale_array(np.dstack([grey] * 3), FAST, device="cpu")
    luma = from_rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    assert out.ndim == 2
    # equal up to rounding, except where the colour result was clipped per channel
    assert np.abs(out - luma).mean() < 0.3
    assert np.abs(out - luma).max() <= 4


def test_two_times_with_a_four_times_model_is_a_downscaled_model_output() -> None:
    image = rgb(24, 24)
    twice = upscale_array(image, FAST, scale=2, device="cpu")
    four = upscale_array(image, FAST, device="cpu").astype(np.float32)
    box = four.reshape(48, 2, 48, 2, 3).mean(axis=(1, 3))
    assert twice.shape == (48, 48, 3)
    assert np.abs(twice.astype(np.float32) - box)[4:-4, 4:-4].mean() < 3


def test_a_scale_above_the_model_scale_is_refused() -> None:
    with pytest.raises(InvalidParameters, match="×2"):
        upscale_array(rgb(), "dat-light-x2", scale=4, device="cpu")


def test_dat_light_runs_at_its_own_scale() -> None:
    out = upscale_array(rgb(18, 20), "dat-light-x2", device="cpu")
    assert out.shape == (36, 40, 3)
    assert abs(float(out.mean()) - float(rgb(18, 20).mean())) < 8


def test_out_of_memory_halves_the_tile_and_the_result_is_unchanged() -> None:
    seen: list[int] = []

    def fail_above_32(forward):
        def wrapped(batch: torch.Tensor) -> torch.Tensor:
            seen.append(batch.shape[-1])
            if batch.shape[-1] > 32:
                raise torch.OutOfMemoryError("injected: CUDA out of memory")
            return forward(batch)
        return wrapped

    image = rgb(40, 48)
    out = upscale_array(image, FAST, tile=128, device="cpu", wrap_forward=fail_above_32,
                        runtime="torch")
    reference = upscale_array(image, FAST, tile=32, device="cpu", runtime="torch")
    assert seen[0] == 48 and seen[1] > 32 and max(seen[2:]) <= 32
    assert np.array_equal(out, reference)


def test_out_of_memory_at_the_smallest_tile_is_a_clear_error() -> None:
    def always_fail(forward):
        def wrapped(batch: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        return wrapped

    with pytest.raises(OutOfMemory, match="32 px"):
        upscale_array(rgb(40, 48), FAST, tile=64, device="cpu", wrap_forward=always_fail,
                      runtime="torch")


def test_progress_reports_each_tile_with_time_left() -> None:
    messages: list[tuple[float, str]] = []
    upscale_array(rgb(40, 48), FAST, tile=32, overlap=8, device="cpu",
                  progress=lambda fraction, text: messages.append((fraction, text)))
    assert [f for f, _ in messages] == sorted(f for f, _ in messages)
    assert messages[-1][0] == 1.0
    assert re.fullmatch(r"tile 0/4 · ~\d+ s left \(estimate\)", messages[0][1])
    assert re.fullmatch(r"tile 1/4 · ~\d+ s left", messages[1][1])


def test_cancel_is_checked_between_tiles() -> None:
    calls: list[int] = []

    def counting(forward):
        def wrapped(batch: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            return forward(batch)
        return wrapped

    done: list[float] = []
    with pytest.raises(InferenceAborted, match="tile 2/4"):
        upscale_array(rgb(40, 48), FAST, tile=32, overlap=8, device="cpu",
                      progress=lambda fraction, _: done.append(fraction),
                      should_abort=lambda: len(done) >= 3, wrap_forward=counting,
                      runtime="torch")
    assert len(calls) == 2


def test_non_finite_half_precision_output_falls_back_to_fp32() -> None:
    upscaler = Upscaler(UpscaleOptions(model=FAST, device="cpu", precision="bf16",
                                       runtime="torch"))
    assert isinstance(upscaler, TorchUpscaler)
    assert upscaler.loaded.precision == "bf16"
    nan_module = lambda x: torch.full((x.shape[0], 3, x.shape[2] * 4, x.shape[3] * 4), torch.nan)  # noqa: E731
    upscaler.loaded = dataclasses.replace(upscaler.loaded, module=nan_module)
    out = upscaler.run(rgb())
    expected = upscale_array(rgb(), FAST, device="cpu", runtime="torch")
    assert upscaler.loaded.precision == "fp32"
    assert np.array_equal(out, expected)
