"""grayscale: drop colour, keep alpha and bit depth."""

from __future__ import annotations

from imgq.ops.base import NoParams, Operation, StepContext
from imgq.ops.image import Image


class Grayscale(Operation):
    name = "grayscale"
    summary = "Convert to shades of grey (alpha and 16-bit depth are kept)."

    def apply(self, image: Image, params: NoParams, ctx: StepContext) -> Image:
        src = image.vips
        space = "grey16" if image.is_16bit else "b-w"
        out = src.colourspace(space) if src.interpretation != space else src
        return image.with_vips(out)


OPERATIONS = [Grayscale()]
