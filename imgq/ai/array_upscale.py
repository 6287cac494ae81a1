"""Tiled super-resolution on numpy arrays with a CPU runtime that is not torch (ncnn).

The same tiles and cross-fade as the torch path (imgq.ai.tiling), the same handling of grey,
alpha and ×2/×3 from a ×4 model; the resampling the torch path does with torch (the antialiased
bicubic reduction of a ×4 tile, the bicubic alpha) is done by libvips here. The output is
written band by band in the caller's dtype, so memory holds one band of float32, not the image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyvips

from imgq.ai.layout import LUMA, ImageLayout
from imgq.ai.tiling import ProgressReporter, TilePlan

logger = logging.getLogger(__name__)

#: (3, h, w) float32 RGB in 0..1 → (3, h·S, w·S) float32, S the model's own scale.
ArrayForward = Callable[[np.ndarray], np.ndarray]


def resample(chw: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic resize of a (C, h, w) float32 array with libvips (antialiased when reducing)."""
    image = pyvips.Image.new_from_array(np.ascontiguousarray(chw.transpose(1, 2, 0)))
    resized = image.resize(width / image.width, vscale=height / image.height, kernel="cubic")
    out = np.asarray(resized.numpy(), dtype=np.float32)
    out = out[:, :, None] if out.ndim == 2 else out
    return np.ascontiguousarray(out[:height, :width].transpose(2, 0, 1))


@dataclass
class ArrayTileTransform:
    """(C, h, w) tile in the caller's value range → (C', h·s, w·s) float in 0..1."""

    forward: ArrayForward
    layout: ImageLayout
    model_scale: int
    scale: int

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        tiles = raw.astype(np.float32) / self.layout.maximum
        colour = tiles[: self.layout.colour]
        rgb = np.repeat(colour, 3, axis=0) if self.layout.colour == 1 else colour
        out = self.forward(np.ascontiguousarray(rgb))
        _, h, w = raw.shape
        if self.scale != self.model_scale:
            out = resample(out, h * self.scale, w * self.scale)
        if self.layout.colour == 1:
            out = np.tensordot(np.asarray(LUMA, dtype=np.float32), out, axes=1)[None]
        if self.layout.has_alpha:
            alpha = np.clip(resample(tiles[-1:], h * self.scale, w * self.scale), 0, 1)
            out = np.concatenate([out, alpha], axis=0)
        return out


@dataclass
class ArrayTiledRun:
    """One tiled pass over a (C, H, W) image into the caller's (H·s, W·s, C') array."""

    plan: TilePlan
    transform: ArrayTileTransform

    def run(self, image: np.ndarray, reporter: ProgressReporter) -> np.ndarray:
        plan, s, layout = self.plan, self.plan.scale, self.transform.layout
        channels = layout.out_channels
        result = np.empty((plan.height * s, plan.width * s, channels), dtype=layout.dtype)
        wy_total = plan.totals(plan.wy, plan.ys, plan.height)
        wx_total = plan.totals(plan.wx, plan.xs, plan.width)
        band = np.zeros((channels, plan.tile_h * s, plan.width * s), dtype=np.float32)
        done = 0
        for row, y in enumerate(plan.ys):
            self._run_row(image, band, row, y, reporter)
            finished = plan.row_finished(row) * s
            rows = band[:, :finished] / (wy_total[done:done + finished, None] * wx_total[None, :])
            result[done:done + finished] = layout.quantise(rows.transpose(1, 2, 0))
            done += finished
            band = np.concatenate([band[:, finished:], np.zeros_like(band[:, :finished])], axis=1)
        return result

    def _run_row(self, image: np.ndarray, band: np.ndarray, row: int, y: int,
                 reporter: ProgressReporter) -> None:
        plan, s = self.plan, self.plan.scale
        wy = plan.wy[row]
        for i, x in enumerate(plan.xs):
            reporter.check_abort()
            out = self.transform(image[:, y:y + plan.tile_h, x:x + plan.tile_w])
            band[:, :, x * s:(x + plan.tile_w) * s] += out * (wy[:, None] * plan.wx[i][None, :])
            reporter.advance(1)


def pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Edge-replicate a (C, h, w) array to at least height × width."""
    _, h, w = image.shape
    if (h, w) == (height, width):
        return image
    return np.pad(image, ((0, 0), (0, height - h), (0, width - w)), mode="edge")
