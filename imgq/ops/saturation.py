"""saturation: towards or away from grey, as Pillow's ImageEnhance.Color."""

from __future__ import annotations

import pyvips

from imgq.ops._enhance import LUMA, FactorParams, in_working_space
from imgq.ops._filters import rounded
from imgq.ops.base import Operation, StepContext
from imgq.ops.image import Image


class Saturation(Operation):
    name = "saturation"
    summary = "Change colour saturation by a factor: 0 is grey, 1 unchanged, 2 twice as vivid."
    params_model = FactorParams

    def apply(self, image: Image, params: FactorParams, ctx: StepContext) -> Image:
        if params.factor == 1.0 or image.bands - int(image.has_alpha) == 1:
            return image  # grey has no colour to change
        image = in_working_space(image)
        # grey + factor × (colour - grey), with grey the luma of each pixel: one 3×3 matrix.
        f = params.factor
        matrix = [[f * (i == j) + (1 - f) * LUMA[j] for j in range(3)] for i in range(3)]
        recomb = pyvips.Image.new_from_array(matrix)
        return image.map_colour(lambda colour: rounded(colour.recomb(recomb)))


OPERATIONS = [Saturation()]
