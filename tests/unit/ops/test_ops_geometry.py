"""crop, rotate, flip and flop against numpy and Pillow references."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image as PILImage

from imgq.errors import ProcessingError
from imgq.ops.image import Image
from tests.fixtures.images import (
    HEIGHT,
    SAMPLES,
    WIDTH,
    from_array,
    from_pil,
    psnr,
    to_array,
    to_pil,
)

if TYPE_CHECKING:
    from tests.unit.ops.conftest import RunPipeline

ALL_SAMPLES = sorted(SAMPLES)


@pytest.mark.parametrize("sample", ALL_SAMPLES)
def test_crop_cuts_out_exactly_the_rectangle(run: RunPipeline, sample: str) -> None:
    source = SAMPLES[sample]
    result = to_array(run("crop:left=10,top=5,width=30,height=20", source.image()))
    assert np.array_equal(result, source.array()[5:25, 10:40])


def test_crop_of_the_whole_image_is_allowed(run: RunPipeline) -> None:
    result = run(f"crop:width={WIDTH},height={HEIGHT}", SAMPLES["rgb"].image())
    assert (result.width, result.height) == (WIDTH, HEIGHT)


@pytest.mark.parametrize(
    "step",
    [
        "crop:left=80,top=0,width=20,height=10",
        "crop:left=0,top=60,width=10,height=5",
        f"crop:width={WIDTH + 1},height={HEIGHT}",
    ],
)
def test_crop_outside_the_image_is_a_clear_error(run: RunPipeline, step: str) -> None:
    with pytest.raises(ProcessingError) as caught:
        run(step, SAMPLES["rgb"].image())
    message = caught.value.message
    assert f"{WIDTH}×{HEIGHT} image" in message and "outside" in message
    assert caught.value.status_code == 422


@pytest.mark.parametrize(
    ("angle", "quarter_turns"),
    [(90, -1), (180, 2), (270, 1), (-90, 1), (-270, -1), (360, 0), (0, 0), (-180.0, 2)],
)
@pytest.mark.parametrize("sample", ALL_SAMPLES)
def test_rotate_by_right_angles_is_exact_and_clockwise(
    run: RunPipeline, sample: str, angle: int, quarter_turns: int
) -> None:
    source = SAMPLES[sample]
    result = to_array(run(f"rotate:angle={angle}", source.image()))
    assert np.array_equal(result, np.rot90(source.array(), k=quarter_turns))


@pytest.mark.parametrize("angle", [30, 45, -12.5])
def test_rotate_by_an_angle_matches_pillow(run: RunPipeline, angle: float) -> None:
    source = SAMPLES["rgb"]
    result = to_array(run(f"rotate:angle={angle},background=#ff0000", source.image()))
    expected = from_pil(
        to_pil(source.array()).rotate(
            -angle, resample=PILImage.Resampling.BICUBIC, expand=True, fillcolor=(255, 0, 0)
        )
    )
    # Both hold the whole rotated image; libvips' canvas is a pixel smaller and its centre half
    # a pixel away, which costs PSNR on this sharp pattern: the other direction scores ~11 dB.
    assert np.abs(np.subtract(result.shape, expected.shape)).max() <= 1
    assert psnr(_centre(result), _centre(expected)) >= 20.0
    assert result[0, 0].tolist() == [255, 0, 0]


def _centre(pixels: np.ndarray) -> np.ndarray:
    cy, cx = pixels.shape[0] // 2, pixels.shape[1] // 2
    return pixels[cy - 20 : cy + 20, cx - 30 : cx + 30]


def test_rotate_by_an_angle_fills_corners_transparent_when_the_image_has_alpha(
    run: RunPipeline,
) -> None:
    result = to_array(run("rotate:angle=45", SAMPLES["rgba"].image()))
    assert result.shape[-1] == 4
    assert result[0, 0, 3] == 0 and result[-1, -1, 3] == 0


def test_rotate_with_a_transparent_background_adds_alpha(run: RunPipeline) -> None:
    result = run("rotate:angle=10,background=#0000", SAMPLES["grey"].image())
    pixels = to_array(result)
    assert result.bands == 2 and result.has_alpha and result.vips.interpretation == "b-w"
    assert pixels[0, 0, 1] == 0
    assert pixels[pixels.shape[0] // 2, pixels.shape[1] // 2, 1] == 255


def test_rotate_of_16_bit_fills_with_the_16_bit_colour(run: RunPipeline) -> None:
    result = to_array(run("rotate:angle=20,background=#ffffff", SAMPLES["rgb16"].image()))
    assert result.dtype == np.uint16 and result[0, 0].tolist() == [65535] * 3


def test_rotate_keeps_edges_of_alpha_images_free_of_hidden_colour(run: RunPipeline) -> None:
    # Transparent pixels are red, opaque ones blue: without premultiplication the partly
    # transparent pixels at the boundary would turn purple.
    pixels = np.zeros((40, 40, 4), np.uint8)
    pixels[..., 0], pixels[:, 20:, 0], pixels[:, 20:, 2], pixels[:, 20:, 3] = 255, 0, 255, 255
    image = Image(vips=from_array(pixels, "srgb"), source_format="png")
    result = to_array(run("rotate:angle=33", image))
    visible = result[..., 3] > 0
    assert result[visible][:, 0].max() <= 2


@pytest.mark.parametrize("sample", ALL_SAMPLES)
def test_flip_mirrors_top_to_bottom(run: RunPipeline, sample: str) -> None:
    source = SAMPLES[sample]
    assert np.array_equal(to_array(run("flip", source.image())), source.array()[::-1])


@pytest.mark.parametrize("sample", ALL_SAMPLES)
def test_flop_mirrors_left_to_right(run: RunPipeline, sample: str) -> None:
    source = SAMPLES[sample]
    assert np.array_equal(to_array(run("flop", source.image())), source.array()[:, ::-1])


def test_flip_flop_is_a_half_turn(run: RunPipeline) -> None:
    image = SAMPLES["rgba"].image()
    assert np.array_equal(
        to_array(run("flip|flop", image)), to_array(run("rotate:angle=180", image))
    )
