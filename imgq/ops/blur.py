"""blur: Gaussian blur of the colour bands."""

from __future__ import annotations

import math

import pyvips
from pydantic import Field

from imgq.ops._filters import rounded
from imgq.ops.base import Operation, Params, StepContext
from imgq.ops.image import Image


class BlurParams(Params):
    radius: float = Field(
        2.0,
        gt=0,
        le=100,
        description="Standard deviation of the Gaussian, in pixels, as Pillow's GaussianBlur "
        "radius. Larger is blurrier.",
    )


class Blur(Operation):
    name = "blur"
    summary = "Gaussian blur (alpha is left as it is; 16-bit and grey are kept)."
    params_model = BlurParams

    def margin(self, params: BlurParams) -> int:
        return math.ceil(3 * params.radius)

    def apply(self, image: Image, params: BlurParams, ctx: StepContext) -> Image:
        def blur(colour: pyvips.Image) -> pyvips.Image:
            precision = "integer" if colour.format == "uchar" else "float"
            return rounded(colour.gaussblur(params.radius, precision=precision))

        return image.map_colour(blur)


OPERATIONS = [Blur()]
