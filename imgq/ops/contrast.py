"""contrast: spread values away from mid-grey, like Pillow's ImageEnhance.Contrast.

Pillow pivots on the image's mean grey level; this pivots on mid-grey (128 of 255) because the
mean would need a pass over the whole image before the pipeline runs, and a streamed image can
be read only once.
"""

from __future__ import annotations

import pyvips

from imgq.ops._enhance import FactorParams, blend
from imgq.ops.base import Operation, StepContext
from imgq.ops.image import Image


class Contrast(Operation):
    name = "contrast"
    summary = "Change contrast around mid-grey by a factor: 0 is flat grey, 1 unchanged."
    params_model = FactorParams

    def apply(self, image: Image, params: FactorParams, ctx: StepContext) -> Image:
        return blend(image, params.factor, _mid_grey)


def _mid_grey(colour: pyvips.Image, peak: float) -> float:
    return peak * 128 / 255


OPERATIONS = [Contrast()]
