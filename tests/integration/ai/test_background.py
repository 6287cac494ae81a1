"""Background removal: RGBA, mask only, or composited on a colour, in the input's mode."""

from __future__ import annotations

import numpy as np
import pytest

from ._support import require_torch, scene

require_torch("onnxruntime")

from imgq.ai.background import predict_mask, remove_background  # noqa: E402
from imgq.errors import InvalidParameters  # noqa: E402


def subject_on_plain_background() -> np.ndarray:
    image = np.full((48, 40, 3), (235, 240, 245), np.uint8)
    image[12:40, 10:30] = scene(28, 20, seed=8)
    return image


def test_rgba_output_has_the_mask_as_alpha() -> None:
    image = subject_on_plain_background()
    out = remove_background(image, "rgba")
    assert out.shape == (48, 40, 4) and out.dtype == np.uint8
    assert np.array_equal(out[:, :, :3], image)
    assert out[20:32, 15:25, 3].mean() > out[:4, :, 3].mean()


def test_mask_only_and_composite() -> None:
    image = subject_on_plain_background()
    mask = remove_background(image, "mask")
    assert mask.shape == (48, 40) and mask.dtype == np.uint8
    composite = remove_background(image, "composite", color=(255, 0, 0))
    assert composite.shape == (48, 40, 3)
    soft = predict_mask(image)
    expected_red = 255 * (1 - soft) + image[:, :, 0] * soft
    assert np.abs(composite[:, :, 0] - expected_red).max() <= 1


def test_grey_sixteen_bit_and_existing_alpha_keep_their_mode() -> None:
    image = subject_on_plain_background()
    grey = remove_background(image[:, :, 1], "rgba")
    assert grey.shape == (48, 40, 2)
    deep = remove_background(image.astype(np.uint16) * 257, "mask")
    assert deep.dtype == np.uint16 and deep.max() > 255
    transparent = np.dstack([image, np.zeros((48, 40), np.uint8)])
    assert remove_background(transparent, "rgba")[:, :, 3].max() == 0
    assert remove_background(image[:, :, 1], "composite", color=(128, 128, 128)).ndim == 2


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(InvalidParameters):
        remove_background(subject_on_plain_background(), "sepia")
