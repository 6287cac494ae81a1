"""Shared helpers of the classic filters: 3×3 kernels and unsharp masking on colour bands."""

from __future__ import annotations

from collections.abc import Sequence

import pyvips

from imgq.ops.image import Image


def kernel3x3(image: Image, weights: Sequence[float], scale: float = 1.0) -> Image:
    """Convolve the colour bands with a 3×3 kernel like Pillow's ImageFilter.Kernel.

    Whole-number kernels with a power-of-two scale on 8-bit images use libvips' fast integer
    path (exact, rounded and clipped like Pillow). Anything else is computed in float, rounded,
    and clipped to the input format: libvips' integer path quantises other scales and is off by
    a level or two. Edge pixels are computed against copies of the border (Pillow leaves them
    unfiltered).
    """
    rows = [list(weights[i : i + 3]) for i in (0, 3, 6)]
    integral = all(float(w).is_integer() for w in weights) and _power_of_two(scale)

    def convolve(colour: pyvips.Image) -> pyvips.Image:
        if integral and colour.format == "uchar":
            mask = pyvips.Image.new_from_array(rows, scale=scale)
            return colour.conv(mask, precision="integer")
        mask = pyvips.Image.new_from_array([[w / scale for w in row] for row in rows])
        return rounded(colour.conv(mask, precision="float"))

    return image.map_colour(convolve)


def unsharp(image: Image, sigma: float, amount: float) -> Image:
    """Add `amount` times the difference between the image and its Gaussian blur."""

    def sharpen(colour: pyvips.Image) -> pyvips.Image:
        blurred = colour.gaussblur(sigma, precision="float")
        return rounded(colour + (colour - blurred) * amount)

    return image.map_colour(sharpen)


def rounded(values: pyvips.Image) -> pyvips.Image:
    """Round to the nearest integer: `cast` truncates, which would darken by half a level."""
    return values.rint() if values.format in ("float", "double") else values


def _power_of_two(value: float) -> bool:
    return float(value).is_integer() and value >= 1 and int(value) & (int(value) - 1) == 0
