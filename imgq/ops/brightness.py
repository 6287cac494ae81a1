"""brightness: scale towards black or beyond, as Pillow's ImageEnhance.Brightness."""

from __future__ import annotations

import pyvips

from imgq.ops._enhance import FactorParams, blend
from imgq.ops.base import Operation, StepContext
from imgq.ops.image import Image


class Brightness(Operation):
    name = "brightness"
    summary = "Brighten or darken by a factor: 0 is black, 1 unchanged, 2 twice as bright."
    params_model = FactorParams

    def apply(self, image: Image, params: FactorParams, ctx: StepContext) -> Image:
        return blend(image, params.factor, _black)


def _black(colour: pyvips.Image, peak: float) -> float:
    return 0.0


OPERATIONS = [Brightness()]
