"""Tiled inference: overlapping tiles, cross-faded so that tiled output equals untiled output.

Tiles are processed row by row. Each finished tile row releases the output rows no later tile
touches; those are normalised, quantised on the device and copied to the host (asynchronously
on a copy stream when on CUDA) while the next row computes, so device memory holds one band of
the output, never the whole image.

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
from typing import TYPE_CHECKING

from imgq.ai.errors import InferenceAborted
from imgq.ai.estimate import describe_estimate

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

Transform = Callable[["torch.Tensor"], "torch.Tensor"]
Progress = Callable[[float, str], None]
ShouldAbort = Callable[[], bool]


def axis_tiles(length: int, tile: int, overlap: int, align: int = 1) -> tuple[int, list[int]]:
    """Equal tiles covering [0, length) with at least `overlap`: (tile size, starts).

    The tile is shrunk to the smallest size that needs no more tiles than `tile` would, so a
    256 px side with 192 px tiles gives two 140 px tiles, not two 192 px ones.
    """
    if length <= tile:
        return length, [0]
    overlap = min(overlap, tile // 2)
    count = math.ceil((length - overlap) / (tile - overlap))
    size = math.ceil((length + (count - 1) * overlap) / count)
    size = min(length, size + (-size) % align)
    return size, [round(i * (length - size) / (count - 1)) for i in range(count)]


def axis_weights(starts: list[int], size: int, scale: int) -> list[torch.Tensor]:
    """Hi-res 1-D blending weight of each tile along one axis (see module docstring)."""
    import torch

    weights = []
    for i, start in enumerate(starts):
        w = torch.ones(size * scale)
        if i > 0:
            w *= _ramp((starts[i - 1] + size - start) * scale, size * scale)
        if i + 1 < len(starts):
            w *= _ramp((start + size - starts[i + 1]) * scale, size * scale).flip(0)
        weights.append(w)
    return weights


def _ramp(overlap: int, size: int) -> torch.Tensor:
    import torch

    d = torch.arange(size, dtype=torch.float32) + 0.5
    return ((d - overlap / 4) / (overlap / 2)).clamp(0, 1)


@dataclass
class TilePlan:
    height: int
    width: int
    tile_h: int
    tile_w: int
    scale: int
    ys: list[int]
    xs: list[int]
    wy: list[torch.Tensor] = field(default_factory=list)
    wx: list[torch.Tensor] = field(default_factory=list)

    @classmethod
    def make(cls, height: int, width: int, tile: int, overlap: int, scale: int,
             align: int = 1) -> TilePlan:
        tile_h, ys = axis_tiles(height, tile, overlap, align)
        tile_w, xs = axis_tiles(width, tile, overlap, align)
        return cls(height, width, tile_h, tile_w, scale, ys, xs,
                   axis_weights(ys, tile_h, scale), axis_weights(xs, tile_w, scale))

    @property
    def count(self) -> int:
        return len(self.ys) * len(self.xs)

    def totals(self, weights: list[torch.Tensor], starts: list[int], length: int) -> torch.Tensor:
        import torch

        total = torch.zeros(length * self.scale)
        for start, w in zip(starts, weights, strict=True):
            total[start * self.scale:start * self.scale + w.numel()] += w
        return total


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


@dataclass
class TiledRun:
    """One tiled pass of `transform` over a (C, H, W) device image into a host (H*s, W*s, C')."""

    plan: TilePlan
    transform: Transform
    out_channels: int
    to_host: Callable[[torch.Tensor], torch.Tensor]  # (C', h, W*s) float → (h, W*s, C') host
    batch: int = 1

    def run(self, image: torch.Tensor, reporter: ProgressReporter) -> list[torch.Tensor]:
        import torch

        plan, s = self.plan, self.plan.scale
        device = image.device
        wy_total = plan.totals(plan.wy, plan.ys, plan.height).to(device)
        wx_total = plan.totals(plan.wx, plan.xs, plan.width).to(device)
        band = torch.zeros(self.out_channels, plan.tile_h * s, plan.width * s, device=device)
        pieces: list[torch.Tensor] = []
        done_rows = 0
        for row, y in enumerate(plan.ys):
            self._run_row(image, band, row, y, reporter)
            next_y = plan.ys[row + 1] if row + 1 < len(plan.ys) else plan.height
            finished = (next_y - y) * s
            rows = band[:, :finished] / (wy_total[done_rows:done_rows + finished, None]
                                         * wx_total[None, :])
            pieces.append(self.to_host(rows))
            done_rows += finished
            band = torch.cat([band[:, finished:], torch.zeros_like(band[:, :finished])], dim=1)
        return pieces

    def _run_row(self, image: torch.Tensor, band: torch.Tensor, row: int, y: int,
                 reporter: ProgressReporter) -> None:
        plan, s = self.plan, self.plan.scale
        wy = plan.wy[row].to(band.device)
        for first in range(0, len(plan.xs), self.batch):
            reporter.check_abort()
            xs = plan.xs[first:first + self.batch]
            crops = [image[:, y:y + plan.tile_h, x:x + plan.tile_w] for x in xs]
            outputs = self.transform(_stack(crops))
            for i, x in enumerate(xs):
                weight = wy[:, None] * plan.wx[first + i].to(band.device)[None, :]
                band[:, :, x * s:(x + plan.tile_w) * s] += outputs[i].float() * weight
            reporter.advance(len(xs))


def _stack(crops: list[torch.Tensor]) -> torch.Tensor:
    import torch

    return torch.stack(crops) if len(crops) > 1 else crops[0][None]
