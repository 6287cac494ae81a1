"""blur, sharpen, edges, smooth and edge_enhance against Pillow's ImageFilter equivalents."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import ImageFilter

from tests.fixtures.images import SAMPLES, from_pil, psnr, to_array, to_pil

if TYPE_CHECKING:
    from tests.unit.ops.conftest import RunPipeline

#: step, Pillow filter, minimum PSNR in dB away from the one-pixel border (Pillow leaves the
#: border unfiltered; libvips filters it against copies of the edge). The 3×3 kernels match
#: exactly but smooth, within two levels (see smooth.py); Pillow's GaussianBlur approximates
#: the Gaussian with box blurs.
FILTERS = [
    ("blur", ImageFilter.GaussianBlur(2), 36.0),
    ("blur:radius=0.8", ImageFilter.GaussianBlur(0.8), 36.0),
    ("sharpen", ImageFilter.SHARPEN, float("inf")),
    ("edges", ImageFilter.FIND_EDGES, float("inf")),
    ("smooth", ImageFilter.SMOOTH, 45.0),
    ("edge_enhance", ImageFilter.EDGE_ENHANCE, float("inf")),
    ("edge_enhance:more=true", ImageFilter.EDGE_ENHANCE_MORE, float("inf")),
]
INTERIOR = (slice(1, -1), slice(1, -1))
IDS = [step for step, _, _ in FILTERS]


@pytest.mark.parametrize(("step", "pillow_filter", "min_psnr"), FILTERS, ids=IDS)
@pytest.mark.parametrize("sample", ["rgb", "grey"])
def test_filter_matches_pillow_on_8_bit_images(
    run: RunPipeline, step: str, pillow_filter: ImageFilter.Filter, min_psnr: float, sample: str
) -> None:
    source = SAMPLES[sample]
    result = to_array(run(step, source.image()))
    expected = from_pil(to_pil(source.array()).filter(pillow_filter))
    assert result.shape == expected.shape
    assert psnr(result[INTERIOR], expected[INTERIOR]) >= min_psnr
    if min_psnr >= 45.0:
        assert np.abs(result[INTERIOR].astype(int) - expected[INTERIOR]).max() <= 2
    assert psnr(result, expected) >= 18.0  # the border differs, but not wildly


@pytest.mark.parametrize("step", IDS)
@pytest.mark.parametrize("sample", ["rgba", "grey_alpha", "rgba16"])
def test_filter_keeps_alpha_untouched(run: RunPipeline, step: str, sample: str) -> None:
    source = SAMPLES[sample]
    result = to_array(run(step, source.image()))
    assert np.array_equal(result[..., -1], source.array()[..., -1])


@pytest.mark.parametrize("step", IDS)
def test_filter_on_colour_bands_of_rgba_matches_the_same_filter_on_rgb(
    run: RunPipeline, step: str
) -> None:
    with_alpha = to_array(run(step, SAMPLES["rgba"].image()))
    without = to_array(run(step, SAMPLES["rgb"].image()))
    assert np.array_equal(with_alpha[..., :3], without)


@pytest.mark.parametrize("step", IDS)
@pytest.mark.parametrize(("deep", "shallow"), [("rgb16", "rgb"), ("grey16", "grey")])
def test_filter_on_16_bit_matches_8_bit_at_16_bit_precision(
    run: RunPipeline, step: str, deep: str, shallow: str
) -> None:
    result16 = run(step, SAMPLES[deep].image())
    assert result16.vips.format == "ushort"
    scaled = to_array(result16).astype(np.float64) / 257
    result8 = to_array(run(step, SAMPLES[shallow].image())).astype(np.float64)
    # 16-bit keeps precision that 8-bit rounds away after each multiply; edges amplify it.
    assert psnr(scaled, result8) >= 38.0


def test_sharpen_with_sigma_is_an_unsharp_mask(run: RunPipeline) -> None:
    source = SAMPLES["rgb"]
    result = to_array(run("sharpen:sigma=1.5,amount=0.8", source.image()))
    expected = from_pil(
        to_pil(source.array()).filter(ImageFilter.UnsharpMask(radius=1.5, percent=80, threshold=0))
    )
    assert psnr(result[4:-4, 4:-4], expected[4:-4, 4:-4]) >= 32.0


def test_sharpen_amount_scales_the_added_detail(run: RunPipeline) -> None:
    source = SAMPLES["grey"]
    original = source.array().astype(np.float64)
    mild = to_array(run("sharpen:amount=0.5", source.image())).astype(np.float64)
    strong = to_array(run("sharpen:amount=2", source.image())).astype(np.float64)
    assert np.abs(mild - original).mean() < np.abs(strong - original).mean()


def test_edges_turns_flat_areas_black(run: RunPipeline) -> None:
    flat = SAMPLES["rgb"].image()
    flat = flat.with_vips((flat.vips * 0 + 140).cast("uchar").copy(interpretation="srgb"))
    assert to_array(run("edges", flat)).max() == 0


def test_blur_with_a_larger_radius_is_smoother(run: RunPipeline) -> None:
    source = SAMPLES["rgb"].image()

    def roughness(step: str) -> float:
        pixels = to_array(run(step, source)).astype(np.float64)
        return float(np.abs(np.diff(pixels, axis=1)).mean())

    assert roughness("blur:radius=4") < roughness("blur:radius=1") < roughness("flop")
