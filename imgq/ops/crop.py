"""crop: cut out a rectangle given in pixels from the top-left corner."""

from __future__ import annotations

from pydantic import Field

from imgq.errors import ProcessingError
from imgq.ops._resample import MAX_SIDE
from imgq.ops.base import Operation, Params, StepContext
from imgq.ops.image import Image


class CropParams(Params):
    left: int = Field(0, ge=0, le=MAX_SIDE, description="Left edge of the rectangle, in pixels.")
    top: int = Field(0, ge=0, le=MAX_SIDE, description="Top edge of the rectangle, in pixels.")
    width: int = Field(..., ge=1, le=MAX_SIDE, description="Width of the rectangle, in pixels.")
    height: int = Field(..., ge=1, le=MAX_SIDE, description="Height of the rectangle, in pixels.")


class Crop(Operation):
    name = "crop"
    summary = "Cut out a rectangle (left, top, width, height); it must lie inside the image."
    params_model = CropParams

    def output_size(self, width: int, height: int, params: CropParams) -> tuple[int, int]:
        return min(params.width, width), min(params.height, height)

    def apply(self, image: Image, params: CropParams, ctx: StepContext) -> Image:
        right, bottom = params.left + params.width, params.top + params.height
        if right > image.width or bottom > image.height:
            raise ProcessingError(
                f"crop: the rectangle {params.width}×{params.height} at ({params.left}, "
                f"{params.top}) reaches ({right}, {bottom}), outside the "
                f"{image.width}×{image.height} image"
            )
        return image.with_vips(
            image.vips.crop(params.left, params.top, params.width, params.height)
        )


OPERATIONS = [Crop()]
