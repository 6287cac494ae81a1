"""resize: to a width and/or height, fitting inside, covering or filling the box."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from pydantic import Field, model_validator

from imgq.ops._resample import (
    MAX_SIDE,
    Fit,
    Kernel,
    Plan,
    plan,
    resample,
    shrink_on_load,
)
from imgq.ops.base import Operation, Params, StepContext
from imgq.ops.image import Image


class ResizeParams(Params):
    width: int | None = Field(
        None, ge=1, le=MAX_SIDE, description="Target width in pixels. Give width, height or both."
    )
    height: int | None = Field(
        None, ge=1, le=MAX_SIDE, description="Target height in pixels. Give width, height or both."
    )
    fit: Fit = Field(
        "contain",
        description="With both width and height: `contain` fits inside the box keeping the "
        "aspect ratio; `cover` fills the box keeping the aspect ratio and crops the overflow "
        "around the centre; `fill` stretches to exactly the box. With one side only, every fit "
        "scales to that side keeping the aspect ratio.",
    )
    enlarge: bool = Field(
        False,
        description="Allow making the image larger. By default an image smaller than the target "
        "is left at its size (on each side, for `fill`).",
    )
    kernel: Kernel = Field(
        "lanczos3", description="Resampling kernel; lanczos3 is sharp, linear and cubic are softer."
    )

    @model_validator(mode="after")
    def _needs_a_side(self) -> ResizeParams:
        if self.width is None and self.height is None:
            raise ValueError("give a width, a height, or both")
        return self


class Resize(Operation):
    name = "resize"
    summary = (
        "Resize to a width and/or height (contain, cover or fill); never enlarges unless asked."
    )
    params_model = ResizeParams

    def apply(self, image: Image, params: ResizeParams, ctx: StepContext) -> Image:
        target = _target(params, image.width, image.height)
        return resample(image, target, params.kernel)

    def output_size(self, width: int, height: int, params: ResizeParams) -> tuple[int, int]:
        target = _target(params, width, height)
        return target.width, target.height

    def load(self, path: Path, fmt: str, params: ResizeParams) -> Image | None:
        if params.kernel != "lanczos3":  # the thumbnail loader resamples with lanczos3 only
            return None
        return shrink_on_load(path, fmt, partial(_target, params))


def _target(params: ResizeParams, width: int, height: int) -> Plan:
    return plan(width, height, params.width, params.height, params.fit, params.enlarge)


OPERATIONS = [Resize()]
