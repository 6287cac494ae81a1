"""smooth: Pillow's SMOOTH 3×3 kernel."""

from __future__ import annotations

from imgq.ops._filters import kernel3x3
from imgq.ops.base import NoParams, Operation, StepContext
from imgq.ops.image import Image

#: Pillow's SMOOTH is (1 ×8, 5) / 13. libvips' fast integer path quantises masks to a scale of
#: 128 anyway, rounding 1/13 up and making the image about a level brighter; this is the
#: nearest mask that sums to 128: within two levels of Pillow at hard edges (mostly equal) and
#: exact on flat areas. The exact float path is seven times slower.
SMOOTH = ([10, 10, 10, 10, 48, 10, 10, 10, 10], 128)


class Smooth(Operation):
    name = "smooth"
    summary = "Smooth lightly (Pillow's SMOOTH 3×3 kernel); alpha is left as it is."

    def margin(self, params: NoParams) -> int:
        return 1  # a 3×3 kernel

    def apply(self, image: Image, params: NoParams, ctx: StepContext) -> Image:
        weights, scale = SMOOTH
        return kernel3x3(image, weights, scale=scale)


OPERATIONS = [Smooth()]
