"""Run a validated pipeline on one input file and write the result."""

from __future__ import annotations

from pathlib import Path

from imgq.errors import ImgqError
from imgq.ops.access import random_access
from imgq.ops.base import BoundStep
from imgq.ops.image import Image, ImageInfo, decode, encode_to_file
from imgq.worker.context import ItemContext


WIDE_MARGIN = 16


def run_pipeline(
    steps: list[BoundStep], source: Path, fmt: str, target: Path, ctx: ItemContext
) -> ImageInfo:
    image: Image | None = steps[0].op.load(source, fmt, steps[0].params) if steps else None
    done = 1 if image is not None else 0
    if image is None:
        image = decode(source, fmt)
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
    try:
        return encode_to_file(image, target, monitor=ctx.monitor)
    except ImgqError:
        ctx.check()  # a killed computation reports why it was killed
        raise
