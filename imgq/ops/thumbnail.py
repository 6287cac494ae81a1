"""thumbnail: a small version inside a square box, optionally cropped to fill it."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Literal

from pydantic import Field

from imgq.ops._resample import MAX_SIDE, Fit, Plan, plan, resample, shrink_on_load
from imgq.ops.base import Operation, Params, StepContext
from imgq.ops.image import Image


class ThumbnailParams(Params):
    size: int = Field(
        256, ge=1, le=MAX_SIDE, description="Side of the square box, in pixels. Never enlarges."
    )
    crop: Literal["none", "centre", "attention"] = Field(
        "none",
        description="`none` fits the whole image inside the box; `centre` fills the box and "
        "crops around the centre; `attention` fills the box and crops around the most "
        "interesting part (skin tones, saturated colour, detail).",
    )


class Thumbnail(Operation):
    name = "thumbnail"
    summary = "Make a thumbnail inside a size×size box, optionally cropped to fill it."
    params_model = ThumbnailParams

    def apply(self, image: Image, params: ThumbnailParams, ctx: StepContext) -> Image:
        target = _target(params, image.width, image.height)
        return resample(image, target, "lanczos3", _crop(params))

    def output_size(self, width: int, height: int, params: ThumbnailParams) -> tuple[int, int]:
        target = _target(params, width, height)
        return target.width, target.height

    def load(self, path: Path, fmt: str, params: ThumbnailParams) -> Image | None:
        return shrink_on_load(path, fmt, partial(_target, params), _crop(params))


def _target(params: ThumbnailParams, width: int, height: int) -> Plan:
    fit: Fit = "contain" if params.crop == "none" else "cover"
    return plan(width, height, params.size, params.size, fit, enlarge=False)


def _crop(params: ThumbnailParams) -> Literal["centre", "attention"]:
    return "attention" if params.crop == "attention" else "centre"


OPERATIONS = [Thumbnail()]
