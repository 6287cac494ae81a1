"""sharpen: Pillow's SHARPEN kernel by default, or an unsharp mask of a chosen radius."""

from __future__ import annotations

import math

from pydantic import Field

from imgq.ops._filters import kernel3x3, unsharp
from imgq.ops.base import Operation, Params, StepContext
from imgq.ops.image import Image


class SharpenParams(Params):
    amount: float = Field(
        1.0,
        gt=0,
        le=10,
        description="Strength: how much of the detail (image minus its blur) is added back. "
        "1.0 with no sigma is exactly Pillow's ImageFilter.SHARPEN.",
    )
    sigma: float | None = Field(
        None,
        gt=0,
        le=50,
        description="Radius (Gaussian standard deviation, pixels) of an unsharp mask. "
        "Leave out for the classic 3×3 sharpen kernel.",
    )


class Sharpen(Operation):
    name = "sharpen"
    summary = "Sharpen details (alpha is left as it is; 16-bit and grey are kept)."
    params_model = SharpenParams

    def margin(self, params: SharpenParams) -> int:
        return 1 if params.sigma is None else math.ceil(3 * params.sigma)

    def apply(self, image: Image, params: SharpenParams, ctx: StepContext) -> Image:
        if params.sigma is not None:
            return unsharp(image, params.sigma, params.amount)
        # SHARPEN is x + (x - mean of the 8 neighbours): (-2 ×8, 32) / 16 at amount 1.
        if params.amount == 1.0:
            return kernel3x3(image, [-2, -2, -2, -2, 32, -2, -2, -2, -2], scale=16)
        side = -params.amount / 8
        return kernel3x3(image, [side] * 4 + [1 + params.amount] + [side] * 4)


OPERATIONS = [Sharpen()]
