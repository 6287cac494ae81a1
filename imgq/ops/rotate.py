"""rotate: clockwise by any angle; multiples of 90° are exact, others fill the corners."""

from __future__ import annotations

import math

import pyvips
from pydantic import Field

from imgq.ops.access import random_access
from imgq.ops.base import Operation, Params, StepContext
from imgq.ops.image import Image

_RIGHT_ANGLES = {90: "d90", 180: "d180", 270: "d270"}
_LUMA = (0.299, 0.587, 0.114)


class RotateParams(Params):
    angle: float = Field(
        ...,
        ge=-360,
        le=360,
        description="Degrees clockwise (negative: anticlockwise). Multiples of 90 are exact and "
        "swap width and height as needed; other angles enlarge the canvas to hold the whole "
        "image and fill the corners with `background`.",
    )
    background: str | None = Field(
        None,
        pattern=r"^#([0-9a-fA-F]{3}|[0-9a-fA-F]{4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$",
        description="Corner colour for angles that are not multiples of 90, as #rgb, #rgba, "
        "#rrggbb or #rrggbbaa. Default: transparent for images with alpha, black otherwise. A "
        "colour that is not opaque adds an alpha channel to an image without one.",
        examples=["#ffffff", "#00000000"],
    )


class Rotate(Operation):
    name = "rotate"
    summary = "Rotate clockwise by an angle in degrees (right angles exactly)."
    params_model = RotateParams

    def output_size(self, width: int, height: int, params: RotateParams) -> tuple[int, int]:
        turn = params.angle % 360
        if turn in (90, 270):
            return height, width
        if turn in (0, 180):
            return width, height
        cos, sin = abs(math.cos(math.radians(turn))), abs(math.sin(math.radians(turn)))
        return round(width * cos + height * sin), round(width * sin + height * cos)

    def apply(self, image: Image, params: RotateParams, ctx: StepContext) -> Image:
        turn = params.angle % 360
        if turn == 0:
            return image
        image = random_access(image)  # every rotation reads across lines
        if turn in _RIGHT_ANGLES:
            return image.with_vips(image.vips.rot(_RIGHT_ANGLES[int(turn)]))
        return image.with_vips(_rotate_free(image.vips, turn, params.background))


OPERATIONS = [Rotate()]


def _rotate_free(src: pyvips.Image, angle: float, background: str | None) -> pyvips.Image:
    peak = 65535 if src.format == "ushort" else 255
    rgba = parse_colour(background) if background else (0, 0, 0, 0 if src.hasalpha() else 1)
    image = src
    if rgba[3] < 1 and not src.hasalpha():
        image = src.bandjoin_const([peak])
    grey = image.bands - int(image.hasalpha()) == 1
    colour = [sum(c * w for c, w in zip(rgba[:3], _LUMA, strict=True))] if grey else list(rgba[:3])
    bicubic = pyvips.Interpolate.new("bicubic")
    if not image.hasalpha():
        out = image.rotate(angle, interpolate=bicubic, background=[c * peak for c in colour])
    else:
        # Premultiplied, so that the colour of transparent pixels does not bleed at the edges.
        fill = [c * rgba[3] * peak for c in colour] + [rgba[3] * peak]
        premultiplied = image.premultiply().rotate(angle, interpolate=bicubic, background=fill)
        out = premultiplied.unpremultiply()
    return out.rint().cast(src.format).copy(interpretation=src.interpretation)


def parse_colour(text: str) -> tuple[float, float, float, float]:
    """#rgb, #rgba, #rrggbb or #rrggbbaa to red, green, blue and alpha in [0, 1]."""
    digits = text.lstrip("#")
    if len(digits) in (3, 4):
        digits = "".join(d * 2 for d in digits)
    if len(digits) == 6:
        digits += "ff"
    r, g, b, a = (int(digits[i : i + 2], 16) / 255 for i in range(0, 8, 2))
    return r, g, b, a
