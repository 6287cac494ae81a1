"""flop: mirror left to right."""

from __future__ import annotations

from imgq.ops.base import NoParams, Operation, StepContext
from imgq.ops.image import Image


class Flop(Operation):
    name = "flop"
    summary = "Mirror horizontally (left becomes right)."

    def apply(self, image: Image, params: NoParams, ctx: StepContext) -> Image:
        return image.with_vips(image.vips.flip("horizontal"))


OPERATIONS = [Flop()]
