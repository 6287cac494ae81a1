"""Run a validated pipeline on one input file and write the result."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from imgq.errors import DecodeError, ImgqError
from imgq.ops.access import random_access
from imgq.ops.base import BoundStep, Operation
from imgq.ops.image import Image, ImageInfo, decode, encode_to_file
from imgq.worker.context import ItemContext


WIDE_MARGIN = 16

LOCK_POLL_SECONDS = 0.2  # how often an item waiting for a one-at-a-time step looks at ctx
_step_locks: dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()


@contextlib.contextmanager
def one_at_a_time(op: Operation, ctx: ItemContext) -> Iterator[None]:
    """Around a gpu step that items in flight may not run at the same time (`concurrent`
    unset): a per-process lock of that operation, waited for while the item may go on (a
    cancel or the time limit ends the wait). Anything else runs as it is."""
    if op.resource != "gpu" or op.concurrent:
        yield
        return
    with _locks_lock:
        lock = _step_locks.setdefault(op.name, threading.Lock())
    while not lock.acquire(timeout=LOCK_POLL_SECONDS):
        ctx.check()
    try:
        yield
    finally:
        lock.release()


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
        with one_at_a_time(step.op, ctx):
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
        with one_at_a_time(steps[0].op, ctx):
            return steps[0].op.create(steps[0].params, ctx), 1
    image = steps[0].op.load(source, fmt, steps[0].params) if steps else None
    if image is not None:
        return image, 1
    return decode(source, fmt), 0
