"""Tiled inference equals untiled inference over the whole image, seams included."""

from __future__ import annotations

import numpy as np
import pytest

from ._support import require_torch, scene

require_torch()

import torch  # noqa: E402

from imgq.ai.tiling import TilePlan, axis_tiles  # noqa: E402
from imgq.ai.upscale import upscale_array  # noqa: E402


@pytest.mark.parametrize(("length", "tile", "overlap"), [(100, 40, 8), (256, 192, 24), (33, 64, 8),
                                                         (97, 32, 16)])
def test_tiles_are_equal_cover_the_axis_and_overlap_enough(length: int, tile: int,
                                                           overlap: int) -> None:
    size, starts = axis_tiles(length, tile, overlap)
    assert size <= tile and starts[0] == 0 and starts[-1] + size == length
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert all(size - gap >= min(overlap, tile // 2) for gap in gaps)


def test_blend_weights_sum_to_one_everywhere() -> None:
    plan = TilePlan.make(90, 70, 32, 12, 2)
    assert plan.count == len(plan.ys) * len(plan.xs) > 4
    np.testing.assert_allclose(plan.totals(plan.wy, plan.ys, 90), np.ones(180), atol=1e-6)
    np.testing.assert_allclose(plan.totals(plan.wx, plan.xs, 70), np.ones(140), atol=1e-6)


def seam_band_mask(plan: TilePlan, shape: tuple[int, int], width: int) -> np.ndarray:
    """True on hi-res rows/columns within `width` of any tile border."""
    mask = np.zeros(shape, dtype=bool)
    for start in plan.ys[1:]:
        mask[max(0, start * plan.scale - width):start * plan.scale + width] = True
    for start in plan.xs[1:]:
        mask[:, max(0, start * plan.scale - width):start * plan.scale + width] = True
    for start in plan.ys[:-1]:
        end = (start + plan.tile_h) * plan.scale
        mask[max(0, end - width):end + width] = True
    for start in plan.xs[:-1]:
        end = (start + plan.tile_w) * plan.scale
        mask[:, max(0, end - width):end + width] = True
    return mask


def test_compact_model_tiled_equals_untiled_within_two_levels() -> None:
    image = scene(70, 62, seed=3)
    whole = upscale_array(image, "realesr-animevideov3", tile=256, device="cpu")
    tiled = upscale_array(image, "realesr-animevideov3", tile=40, overlap=24, device="cpu")
    difference = np.abs(whole.astype(np.int16) - tiled.astype(np.int16))
    assert whole.shape == tiled.shape == (280, 248, 3)
    assert difference.max() <= 2
    assert difference.mean() < 0.1
    assert TilePlan.make(70, 62, 40, 24, 4).count == 9


def test_realesrgan_tiled_equals_untiled_within_tolerance_and_seams_are_invisible() -> None:
    # RRDBNet sees ~hundreds of pixels of context, so tiles cannot match bit for bit; the
    # cross-fade must keep the difference small everywhere and no larger along the seams.
    image = scene(80, 72, seed=4).astype(np.float32) / 255
    whole = upscale_array(image, "realesrgan-x4plus", tile=256, device="cpu")
    tiled = upscale_array(image, "realesrgan-x4plus", tile=56, overlap=32, device="cpu")
    difference = np.abs(whole - tiled) * 255
    plan = TilePlan.make(80, 72, 56, 32, 4)
    seams = seam_band_mask(plan, difference.shape[:2], 8)
    assert plan.count == 4 and seams.any()
    assert difference.mean() < 0.6
    assert np.percentile(difference, 99.9) < 10
    assert difference[seams].mean() < 1.0


def test_fixed_tiles_keep_their_size_and_still_cover_the_axis() -> None:
    for length in (300, 513, 1000):
        size, starts = axis_tiles(length, 256, 24, fixed=True)
        assert size == 256 and starts[0] == 0 and starts[-1] + size == length
        assert all(b - a <= 256 - 24 for a, b in zip(starts, starts[1:], strict=False))


def test_batches_across_tile_rows_give_the_same_image_as_one_tile_at_a_time() -> None:
    image = scene(70, 62, seed=5)
    one = upscale_array(image, "realesr-animevideov3", tile=32, overlap=8, device="cpu",
                        runtime="torch", batch=1)
    shapes: list[tuple[int, ...]] = []

    def record(forward):
        def wrapped(batch: torch.Tensor) -> torch.Tensor:
            shapes.append(tuple(batch.shape))
            return forward(batch)
        return wrapped

    # 3 tiles per row and batches of 4: every batch but the first spans two rows
    many = upscale_array(image, "realesr-animevideov3", tile=32, overlap=8, device="cpu",
                         runtime="torch", batch=4, wrap_forward=record)
    assert TilePlan.make(70, 62, 32, 8, 4).count == 9
    assert [s[0] for s in shapes] == [4, 4, 1]
    assert np.abs(one.astype(np.int16) - many.astype(np.int16)).max() <= 1
