"""Shared by brightness, contrast and saturation: blends like Pillow's ImageEnhance.

Each blends the image with a degenerate version of it: ``out = degenerate + factor × (image -
degenerate)``, so 1.0 leaves the image as it is, 0.0 gives the degenerate image, and larger
factors extrapolate (clipped to the sample range). Alpha is never touched.
"""

from __future__ import annotations

from collections.abc import Callable

import pyvips
from pydantic import Field

from imgq.ops._filters import rounded
from imgq.ops.base import Params
from imgq.ops.image import Image

#: ITU-R 601-2 luma, as Pillow's convert("L").
LUMA = (0.299, 0.587, 0.114)
_WORKING_SPACES = frozenset({"srgb", "rgb16", "b-w", "grey16"})

Degenerate = Callable[[pyvips.Image, float], pyvips.Image | float]


class FactorParams(Params):
    factor: float = Field(
        ...,
        ge=0,
        le=100,
        description="1.0 leaves the image as it is; 0.0 gives the fully reduced image; above 1 "
        "strengthens the effect (as Pillow's ImageEnhance).",
    )


def blend(image: Image, factor: float, degenerate: Degenerate) -> Image:
    """`degenerate(colour, peak)` gives the image (or a constant) that factor 0 produces."""
    if factor == 1.0:
        return image
    image = in_working_space(image)

    def mix(colour: pyvips.Image) -> pyvips.Image:
        peak = 65535.0 if colour.format == "ushort" else 255.0
        base = degenerate(colour, peak)
        return rounded((colour - base) * factor + base)

    return image.map_colour(mix)


def in_working_space(image: Image) -> Image:
    """CMYK, LAB and the like to sRGB (16-bit stays 16-bit): the blends are defined on RGB."""
    src = image.vips
    if src.interpretation in _WORKING_SPACES:
        return image
    target = "rgb16" if src.format == "ushort" else "srgb"
    if src.get_typeof("icc-profile-data"):
        depth = 16 if target == "rgb16" else 8
        return image.with_vips(src.icc_transform("srgb", embedded=True, depth=depth))
    return image.with_vips(src.colourspace(target))
