"""Run a validated pipeline on one input file and write the result."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from imgq.errors import DecodeError, ImgqError
from imgq.ops.access import random_access
from imgq.ops.base import BoundStep
from imgq.ops.image import Image, ImageInfo, decode, encode_to_file
from imgq.worker.context import ItemContext


WIDE_MARGIN = 16


def run_pipeline(
    steps: list[BoundStep], source: Path | None, fmt: str | None, target: Path, ctx: ItemContext
) -> ImageInfo:
    image, done = _first_image(steps, source, fmt, ctx)
    read_around = False
    for index, step in enumerate(steps[done:], start=done):
        ctx.check()
        ctx.begin_step(index, step.name)
        margin = step.op.margin(step.params)
        if margin and (read_around or margin >= WIDE_MARGIN):
            # Lazy neighbourhood filters on top of each other recompute their input for every
            # tile, and a wide one reads out of order from a sequential decoder: render first.
            image = random_access(image)
        read_around = read_around or margin > 0
        image = step.op.apply(image, step.params, ctx)
    ctx.check()
    ctx.begin_step(len(steps) - 1, "encoding")
    details = dict(image.details)
    try:
        info = encode_to_file(image, target, monitor=ctx.monitor)
    except ImgqError:
        ctx.check()  # a killed computation reports why it was killed
        raise
    return replace(info, details=details) if details else info


def _first_image(steps: list[BoundStep], source: Path | None, fmt: str | None,
                 ctx: ItemContext) -> tuple[Image, int]:
    """The image the pipeline starts from and how many steps that took: a step that makes
    its image (no input file), a step that decodes and applies at once, or a plain decode."""
    if source is None or fmt is None:
        if not steps or not steps[0].op.makes_image:
            raise DecodeError("this item has no input image and its pipeline does not make one")
        ctx.begin_step(0, steps[0].name)
        return steps[0].op.create(steps[0].params, ctx), 1
    image = steps[0].op.load(source, fmt, steps[0].params) if steps else None
    if image is not None:
        return image, 1
    return decode(source, fmt), 0
