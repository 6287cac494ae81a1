"""brightness, contrast and saturation against Pillow's ImageEnhance."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageEnhance

from tests.fixtures.images import (
    SAMPLES,
    from_pil,
    mean_abs_diff,
    psnr,
    to_array,
    to_pil,
)

if TYPE_CHECKING:
    from tests.unit.ops.conftest import RunPipeline

FACTORS = [0.0, 0.5, 1.0, 1.7, 3.0]


def _pillow_contrast_around_mid_grey(image: PILImage.Image, factor: float) -> PILImage.Image:
    """ImageEnhance.Contrast with mid-grey in place of the image's mean (see contrast.py)."""
    grey = PILImage.new(image.mode, image.size, (128,) * len(image.getbands()))
    return PILImage.blend(grey, image, factor)


REFERENCES = {
    "brightness": lambda image, f: ImageEnhance.Brightness(image).enhance(f),
    "saturation": lambda image, f: ImageEnhance.Color(image).enhance(f),
    "contrast": _pillow_contrast_around_mid_grey,
}


@pytest.mark.parametrize("factor", FACTORS)
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_enhancement_matches_pillow_within_one_level(
    run: RunPipeline, name: str, factor: float
) -> None:
    source = SAMPLES["rgb"]
    result = to_array(run(f"{name}:factor={factor}", source.image()))
    expected = from_pil(REFERENCES[name](to_pil(source.array()), factor))
    # Pillow truncates and works from an 8-bit grey; imgq rounds and uses exact luma.
    assert np.abs(result.astype(int) - expected).max() <= 2
    assert mean_abs_diff(result, expected) <= 0.75


@pytest.mark.parametrize("name", ["brightness", "contrast"])
def test_enhancement_of_grey_matches_pillow_on_l_images(run: RunPipeline, name: str) -> None:
    source = SAMPLES["grey"]
    result = to_array(run(f"{name}:factor=1.4", source.image()))
    expected = from_pil(REFERENCES[name](to_pil(source.array()), 1.4))
    assert mean_abs_diff(result, expected) <= 0.75


def test_factor_one_leaves_the_image_as_it_is(run: RunPipeline) -> None:
    image = SAMPLES["rgba16"].image()
    for name in REFERENCES:
        assert run(f"{name}:factor=1", image) is image


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("sample", ["rgba", "grey_alpha", "rgba16"])
def test_enhancement_keeps_alpha_untouched(run: RunPipeline, name: str, sample: str) -> None:
    source = SAMPLES[sample]
    result = to_array(run(f"{name}:factor=1.6", source.image()))
    assert np.array_equal(result[..., -1], source.array()[..., -1])


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_enhancement_of_16_bit_matches_8_bit(run: RunPipeline, name: str) -> None:
    result16 = run(f"{name}:factor=1.6", SAMPLES["rgb16"].image())
    assert result16.vips.format == "ushort"
    result8 = to_array(run(f"{name}:factor=1.6", SAMPLES["rgb"].image()))
    assert psnr(to_array(result16) / 257, result8) >= 45.0


def test_saturation_zero_makes_every_pixel_grey(run: RunPipeline) -> None:
    result = to_array(run("saturation:factor=0", SAMPLES["rgb"].image())).astype(int)
    assert np.abs(result[..., 0] - result[..., 1]).max() <= 1
    assert np.abs(result[..., 1] - result[..., 2]).max() <= 1


def test_saturation_leaves_grey_images_as_they_are(run: RunPipeline) -> None:
    image = SAMPLES["grey_alpha"].image()
    assert run("saturation:factor=2.5", image) is image


def test_saturation_of_cmyk_works_on_its_colours_in_srgb(run: RunPipeline, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from imgq.ops.image import decode
    from tests.fixtures.images import write_cmyk_jpeg

    image = decode(write_cmyk_jpeg(tmp_path / "cmyk.jpg"), "jpeg")
    assert image.vips.interpretation == "cmyk"
    result = run("saturation:factor=0", image)
    assert result.vips.interpretation == "srgb" and result.bands == 3
    pixels = to_array(result).astype(int)
    assert np.abs(pixels[..., 0] - pixels[..., 2]).max() <= 1
