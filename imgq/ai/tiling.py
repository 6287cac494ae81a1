"""Tiled inference: overlapping tiles, cross-faded so that tiled output equals untiled output.

The plan is plain numpy, shared by the torch path (imgq.ai.torch_tiling) and the numpy path
(imgq.ai.array_upscale). Tiles are processed in row order. Each finished tile row releases the
output rows no later tile touches; those are normalised, quantised and written out while the
next tiles compute, so memory holds a band or two of the output in float, never the image.

Blending: in an overlap of length L between two tiles, the first L/4 pixels next to a tile's
inner edge get weight 0 (they saw the least context), the middle half ramps linearly, and the
two ramps sum to one. Weights are separable, so the normaliser is an outer product of 1-D sums.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from imgq.ai.errors import InferenceAborted
from imgq.ai.estimate import describe_estimate

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
ShouldAbort = Callable[[], bool]


def axis_tiles(length: int, tile: int, overlap: int, align: int = 1,
               fixed: bool = False) -> tuple[int, list[int]]:
    """Equal tiles covering [0, length) with at least `overlap`: (tile size, starts).

    The tile is shrunk to the smallest size that needs no more tiles than `tile` would, so a
    256 px side with 192 px tiles gives two 140 px tiles, not two 192 px ones; unless `fixed`
    (a GPU keeps one tile shape for every image), where the tiles overlap more instead.
    """
    if length <= tile:
        return length, [0]
    overlap = min(overlap, tile // 2)
    count = math.ceil((length - overlap) / (tile - overlap))
    size = tile if fixed else math.ceil((length + (count - 1) * overlap) / count)
    size = min(length, size + (-size) % align)
    return size, [round(i * (length - size) / (count - 1)) for i in range(count)]


def axis_weights(starts: list[int], size: int, scale: int) -> list[np.ndarray]:
    """Hi-res 1-D blending weight of each tile along one axis (see module docstring)."""
    weights = []
    for i, start in enumerate(starts):
        w = np.ones(size * scale, dtype=np.float32)
        if i > 0:
            w *= _ramp((starts[i - 1] + size - start) * scale, size * scale)
        if i + 1 < len(starts):
            w *= _ramp((start + size - starts[i + 1]) * scale, size * scale)[::-1]
        weights.append(w)
    return weights


def _ramp(overlap: int, size: int) -> np.ndarray:
    d = np.arange(size, dtype=np.float32) + 0.5
    ramp: np.ndarray = np.clip((d - overlap / 4) / (overlap / 2), 0, 1).astype(np.float32)
    return ramp


@dataclass
class TilePlan:
    """Where the tiles of one image are, and their blending weights (numpy, float32)."""

    height: int
    width: int
    tile_h: int
    tile_w: int
    scale: int
    ys: list[int]
    xs: list[int]
    wy: list[np.ndarray] = field(default_factory=list)
    wx: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def make(cls, height: int, width: int, tile: int, overlap: int, scale: int,
             align: int = 1, fixed: bool = False) -> TilePlan:
        tile_h, ys = axis_tiles(height, tile, overlap, align, fixed)
        tile_w, xs = axis_tiles(width, tile, overlap, align, fixed)
        return cls(height, width, tile_h, tile_w, scale, ys, xs,
                   axis_weights(ys, tile_h, scale), axis_weights(xs, tile_w, scale))

    @property
    def count(self) -> int:
        return len(self.ys) * len(self.xs)

    def totals(self, weights: list[np.ndarray], starts: list[int], length: int) -> np.ndarray:
        total = np.zeros(length * self.scale, dtype=np.float32)
        for start, w in zip(starts, weights, strict=True):
            total[start * self.scale:start * self.scale + w.size] += w
        return total

    def row_finished(self, row: int) -> int:
        """Low-res rows that no tile after this row touches, counted from this row's start."""
        next_y = self.ys[row + 1] if row + 1 < len(self.ys) else self.height
        return next_y - self.ys[row]


class ProgressReporter:
    def __init__(self, total: int, progress: Progress | None, should_abort: ShouldAbort | None):
        self.total, self.done = total, 0
        self.progress, self.should_abort = progress, should_abort
        self.started = time.monotonic()

    def announce(self, estimated_seconds: float) -> None:
        """The stage message before the first tile: the estimate, since nothing is measured yet."""
        if self.progress is not None:
            left = describe_estimate(estimated_seconds)
            self.progress(0.0, f"tile 0/{self.total} · {left} left (estimate)")

    def check_abort(self) -> None:
        if self.should_abort is not None and self.should_abort():
            raise InferenceAborted(f"stopped after tile {self.done}/{self.total}")

    def advance(self, tiles: int) -> None:
        self.done += tiles
        if self.progress is None:
            return
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.total - self.done)
        self.progress(self.done / self.total,
                      f"tile {self.done}/{self.total} · {describe_estimate(left)} left")
