"""flip: mirror top to bottom."""

from __future__ import annotations

from imgq.ops.access import random_access
from imgq.ops.base import NoParams, Operation, StepContext
from imgq.ops.image import Image


class Flip(Operation):
    name = "flip"
    summary = "Mirror vertically (top becomes bottom)."

    def apply(self, image: Image, params: NoParams, ctx: StepContext) -> Image:
        image = random_access(image)  # reads bottom lines first
        return image.with_vips(image.vips.flip("vertical"))


OPERATIONS = [Flip()]
