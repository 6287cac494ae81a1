"""Shared by resize and thumbnail: the size arithmetic, resampling, and shrink-on-load.

Both paths run the same :class:`Plan`, so a resize fused into decoding (first step) and a
resize later in a pipeline give images of the same size and nearly the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyvips

from imgq.errors import DecodeError
from imgq.ops.access import render
from imgq.ops.image import Image, header, open_source, vips_reason

Fit = Literal["contain", "cover", "fill"]
Crop = Literal["centre", "attention"]
Kernel = Literal["nearest", "linear", "cubic", "mitchell", "lanczos2", "lanczos3"]

#: Largest width or height a resize may ask for.
MAX_SIDE = 65_535

#: Only these inputs may go through pyvips' thumbnail loader: it always returns 8-bit sRGB or
#: 8-bit grey, converting CMYK and 16-bit images, which `decode` keeps as they are.
_FUSABLE_INTERPRETATIONS = frozenset({"srgb", "b-w"})
_ROTATED_ORIENTATIONS = frozenset({5, 6, 7, 8})


@dataclass(frozen=True)
class Plan:
    """Scale the source to `scaled_*`, then centre- or attention-crop it to `width`×`height`."""

    source_width: int
    source_height: int
    scaled_width: int
    scaled_height: int
    width: int
    height: int

    @property
    def is_identity(self) -> bool:
        same_width = self.source_width == self.scaled_width == self.width
        return same_width and self.source_height == self.scaled_height == self.height


def plan(
    src_w: int, src_h: int, width: int | None, height: int | None, fit: Fit, enlarge: bool
) -> Plan:
    """Work out the output size; with only one side given every fit keeps the aspect ratio."""

    def cap(scale: float) -> float:
        return scale if enlarge else min(scale, 1.0)

    if width is not None and height is not None:
        if fit == "fill":
            sx, sy = cap(width / src_w), cap(height / src_h)
        else:
            pick = min if fit == "contain" else max
            sx = sy = cap(pick(width / src_w, height / src_h))
    elif width is not None:
        sx = sy = cap(width / src_w)
    elif height is not None:
        sx = sy = cap(height / src_h)
    else:
        raise ValueError("give a width, a height, or both")
    scaled_w, scaled_h = max(1, round(src_w * sx)), max(1, round(src_h * sy))
    if fit == "cover" and width is not None and height is not None:
        return Plan(src_w, src_h, scaled_w, scaled_h, min(width, scaled_w), min(height, scaled_h))
    return Plan(src_w, src_h, scaled_w, scaled_h, scaled_w, scaled_h)


def resample(image: Image, target: Plan, kernel: Kernel, crop: Crop = "centre") -> Image:
    """Run a plan on a decoded image: resize (alpha premultiplied), then crop."""
    src = image.vips
    out = _resize(src, target.scaled_width, target.scaled_height, kernel)
    return image.with_vips(_crop(out, target, crop))


def _resize(src: pyvips.Image, width: int, height: int, kernel: Kernel) -> pyvips.Image:
    if (width, height) == (src.width, src.height):
        return src
    hscale, vscale = width / src.width, height / src.height
    if not src.hasalpha():
        return src.resize(hscale, vscale=vscale, kernel=kernel)
    # Premultiplied, so that the colour of transparent pixels does not bleed into their
    # neighbours; back to the source format afterwards, rounded rather than truncated.
    out = src.premultiply().resize(hscale, vscale=vscale, kernel=kernel).unpremultiply()
    return out.rint().cast(src.format).copy(interpretation=src.interpretation)


def _crop(image: pyvips.Image, target: Plan, crop: Crop) -> pyvips.Image:
    width, height = image.get("width"), image.get("height")
    if (width, height) == (target.width, target.height):
        return image
    if crop == "attention":
        # smartcrop reads its input twice: once to find the interest, once to crop.
        return render(image).smartcrop(target.width, target.height, interesting="attention")
    left = (width - target.width) // 2
    top = (height - target.height) // 2
    # called by name: `image.crop` would first look for an image property so named
    return pyvips.Operation.call("crop", image, left, top, target.width, target.height)


#: From the upright source size to a plan.
PlanFn = Callable[[int, int], Plan]


def upright_size(source: pyvips.Source, fmt: str) -> tuple[pyvips.Image, int, int]:
    """Open the header and give the size after EXIF orientation, as `decode` will see it."""
    try:
        opened = header(source, fmt)
    except pyvips.Error as exc:
        raise DecodeError(f"cannot decode {fmt} image: {vips_reason(exc)}") from None
    width, height = int(opened.get("width")), int(opened.get("height"))
    orientation = int(opened.get("orientation")) if opened.get_typeof("orientation") else 1
    if orientation in _ROTATED_ORIENTATIONS:
        width, height = height, width
    return opened, width, height


def shrink_on_load(path: Path, fmt: str, target_of: PlanFn, crop: Crop = "centre") -> Image | None:
    """Decode and resize at once with pyvips' thumbnail loader (JPEG DCT and WebP shrink, and
    no full-size decoded image in memory); None where `decode` and `resample` must do it.

    The header and the thumbnail read one source (the file opened once, its loader named by
    the format, where a thumbnail of a file name would search for it, opening the file for
    each loader it tries). A cover is resized, then cropped: thumbnail's own crop costs a
    400×300 JPEG's thumbnail about 3 % more instructions."""
    try:
        source = open_source(path)
    except pyvips.Error as exc:
        raise DecodeError(f"cannot decode {fmt} image: {vips_reason(exc)}") from None
    opened, width, height = upright_size(source, fmt)
    if (opened.get("format") != "uchar"
            or opened.get("interpretation") not in _FUSABLE_INTERPRETATIONS):
        return None
    target = target_of(width, height)
    if target.is_identity:
        return None
    try:  # thumbnail premultiplies alpha itself, and applies the EXIF orientation once
        out = pyvips.Operation.call(
            "thumbnail_source",
            source,
            target.scaled_width,
            height=target.scaled_height,
            size="force",
            # the loader's options: thumbnail_source does not pass its own fail_on on to it
            option_string="fail_on=error",
        )
    except pyvips.Error as exc:
        raise DecodeError(f"cannot decode {fmt} image: {vips_reason(exc)}") from None
    return Image(vips=_crop(out, target, crop), source_format=fmt)
