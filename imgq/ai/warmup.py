"""Getting a worker process ready for model runs: its CPU threads, and this machine's costs.

A worker that runs models on the CPU measures a model once per machine before its figures are
needed (imgq.ai.costs): two random images through the same path real items take, a small one
(mostly the fixed cost of a run) and one of about a second's work cut into tiles as a real image
is (the cost per pixel), so that the first estimate a person sees is what this machine does,
not what a reference CPU did. Real runs refine it. `imgq serve` measures the default model
first and the others one at a time while its AI workers have nothing else to do
(imgq.dispatch.embedded), so no item waits for models nobody asked for.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from imgq.ai.costs import CostBook, Run, cost_class, cost_key, covered_pixels
from imgq.ai.cpu_nets import limit_threads, usable_cores
from imgq.ai.descriptors import ModelDescriptor
from imgq.ai.estimate import estimate_cpu_seconds
from imgq.ai.upscale import UpscaleOptions, Upscaler

logger = logging.getLogger(__name__)

CALIBRATION_SECONDS = 1.0  # aimed at with the reference figures; slower CPUs take longer
SMALL_SIDE = 32  # the small image: mostly the fixed cost of a run
LARGE_SIDES = (128, 384)  # the larger image's side: up to 3×3 tiles of a real image's shape
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def limit_cpu_threads(threads: int) -> None:
    """Make this process's model runs use `threads` CPU threads (OpenVINO and ncnn nets,
    torch when installed, and OpenMP for the libraries that read it), so that threads ×
    processes stays within the cores."""
    for name in _THREAD_VARIABLES:
        os.environ[name] = str(threads)
    limit_threads(threads)
    # torch takes its thread count from OMP_NUM_THREADS when it loads, so a process that has
    # not loaded it yet does not here (importing torch costs seconds of CPU in every AI worker
    # process, most of which never run a torch model); one that has is told now.
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)


def calibration_sides(descriptor: ModelDescriptor) -> tuple[int, ...]:
    """The small side, and a larger one that the reference figures say takes about
    CALIBRATION_SECONDS; one tile for a model whose graph has a single tile shape (DAT light:
    a small image costs a whole tile, and a tile is seconds of work)."""
    align = max(16, descriptor.size_alignment)
    small = max(SMALL_SIDE, descriptor.min_size)
    if descriptor.graph_tile:  # one tile shape, whatever the size: one tile says it all
        return (descriptor.graph_tile,)
    per_pixel = estimate_cpu_seconds(100, 100, descriptor) / 10_000
    side = int(math.sqrt(CALIBRATION_SECONDS / max(per_pixel, 1e-12)))
    low, high = LARGE_SIDES
    return small, max(low, min(high, side)) // align * align


def calibrate(descriptor: ModelDescriptor, book: CostBook, models_dir: Path | None = None,
              threads: int | None = None) -> None:
    """Time `descriptor` on the CPU on two random images (after a warm-up that loads it) and
    record both runs, which give its fixed and its per-pixel cost (in CPU seconds) and the
    machine's pace now: a small image of a new shape (the fixed part, as each image has one),
    and a larger one in tiles, timed on its second run (the cost per pixel)."""
    threads = threads or usable_cores()
    upscaler = Upscaler(UpscaleOptions(model=descriptor.name, device="cpu",
                                       models_dir=models_dir, threads=threads))
    rng = np.random.default_rng(0)
    side0 = max(16, descriptor.min_size)
    upscaler.run(rng.integers(0, 256, (side0, side0, 3), dtype=np.uint8))  # loads the model
    runs = []
    sides = calibration_sides(descriptor)
    for side in sides:
        image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        if side == sides[-1] and len(sides) > 1:
            # The per-pixel part and the pace of a real image's tiles: the first run of a new
            # tile shape costs more and runs less in parallel; the small image carries that.
            upscaler.run(image)
        started, cpu = time.perf_counter(), time.process_time()
        upscaler.run(image)
        runs.append(Run(covered_pixels(side, side, descriptor), time.perf_counter() - started,
                        time.process_time() - cpu))
    book.record_runs(cost_key(descriptor, "cpu", threads), runs)
    logger.info("measured %s on this CPU", descriptor.name, extra={"model": descriptor.name})


def measured(descriptor: ModelDescriptor, book: CostBook, threads: int | None = None) -> bool:
    """Whether this machine has a figure for the model on the CPU."""
    fit = book.fit(cost_key(descriptor, "cpu", threads or usable_cores()))
    return fit is not None and fit.runs > 0


def calibrate_missing(descriptors: Iterable[ModelDescriptor], book: CostBook,
                      models_dir: Path | None = None, threads: int | None = None,
                      limit: int | None = None) -> list[str]:
    """Calibrate, in the order given, the models this machine has no figure for (one of
    each cost class), at most `limit` of them; the names measured."""
    done: list[str] = []
    classes: set[str] = set()
    for descriptor in descriptors:
        if limit is not None and len(done) >= limit:
            break
        if cost_class(descriptor) in classes or measured(descriptor, book, threads):
            continue
        classes.add(cost_class(descriptor))
        try:
            calibrate(descriptor, book, models_dir, threads)
        except Exception:  # a model that cannot run here fails its items with the reason
            logger.exception("could not measure %s on this CPU", descriptor.name)
            continue
        done.append(descriptor.name)
    return done
