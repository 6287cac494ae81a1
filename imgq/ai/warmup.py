"""Getting a worker process ready for model runs: its CPU threads, and this machine's costs.

A worker that runs models on the CPU measures each installed model once per machine (a random
image of about a second's work, through the same path real items take), so that the first estimate a
person sees is what this machine does, not what a reference CPU did. Later runs refine it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from imgq.ai.costs import CostBook, covered_pixels
from imgq.ai.descriptors import ModelDescriptor
from imgq.ai.estimate import estimate_cpu_seconds
from imgq.ai.upscale import UpscaleOptions, Upscaler

logger = logging.getLogger(__name__)

CALIBRATION_SECONDS = 1.0  # aimed at with the reference figures; slower CPUs take longer
CALIBRATION_SIDES = (48, 128)  # the smallest and largest side measured
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def limit_cpu_threads(threads: int) -> None:
    """Make this process's model runs use `threads` CPU threads (torch, and OpenMP for the
    libraries that read it), so that threads × processes stays within the cores."""
    for name in _THREAD_VARIABLES:
        os.environ[name] = str(threads)
    import torch

    torch.set_num_threads(threads)


def calibration_side(descriptor: ModelDescriptor) -> int:
    """A square side that the reference figures say takes about CALIBRATION_SECONDS."""
    per_pixel = estimate_cpu_seconds(100, 100, descriptor) / 10_000
    side = int(math.sqrt(CALIBRATION_SECONDS / max(per_pixel, 1e-12)))
    low, high = CALIBRATION_SIDES
    return max(low, min(high, side)) // 16 * 16


def calibrate(descriptor: ModelDescriptor, book: CostBook, models_dir: Path | None = None
              ) -> None:
    """Time `descriptor` once on a random image on the CPU (after a warm-up) and record it;
    real runs of other sizes then add the fixed part of the cost to the fit."""
    upscaler = Upscaler(UpscaleOptions(model=descriptor.name, device="cpu",
                                       models_dir=models_dir))
    rng = np.random.default_rng(0)
    side0 = max(16, descriptor.min_size)
    upscaler.run(rng.integers(0, 256, (side0, side0, 3), dtype=np.uint8))  # warm-up
    side = calibration_side(descriptor)
    image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    started = time.perf_counter()
    upscaler.run(image)
    book.record(CostBook.key(descriptor.name, "cpu"), covered_pixels(side, side, descriptor),
                time.perf_counter() - started)
    logger.info("measured %s on this CPU", descriptor.name, extra={"model": descriptor.name})


def calibrate_missing(descriptors: Iterable[ModelDescriptor], book: CostBook,
                      models_dir: Path | None = None) -> list[str]:
    """Calibrate the models this machine has no figure for; the names measured."""
    done = []
    for descriptor in descriptors:
        fit = book.fit(CostBook.key(descriptor.name, "cpu"))
        if fit is not None and fit.runs:
            continue
        try:
            calibrate(descriptor, book, models_dir)
        except Exception:  # a model that cannot run here fails its items with the reason
            logger.exception("could not measure %s on this CPU", descriptor.name)
            continue
        done.append(descriptor.name)
    return done
