"""The tiled pass on a torch device, batched across tile rows.

Tiles are taken in row order, ``batch`` at a time, and a batch may span rows, so a GPU gets
full batches of one fixed shape even when a row holds a single tile. Each tile row has its own
band of the output on the device; when a row and every row before it are complete, the output
rows no later tile touches are normalised and handed to the host writer (see imgq.ai.tiling
for the cross-fade). Band buffers are recycled, so a run allocates a handful, not one per row.
A short last batch is filled up with repeats of its last tile so that the shape never changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from imgq.ai.tiling import ProgressReporter, TilePlan

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

Transform = Callable[["torch.Tensor"], "torch.Tensor"]


@dataclass
class TorchTiledRun:
    """One tiled pass of `transform` over a (C, H, W) device image; bands go to `emit`."""

    plan: TilePlan
    transform: Transform
    out_channels: int
    emit: Callable[[torch.Tensor], None]  # (C', rows, W*s) float in 0..1
    batch: int = 1
    fixed_batch: bool = False  # pad a short last batch to `batch` tiles (fixed shapes on CUDA)
    _bands: dict[int, torch.Tensor] = field(default_factory=dict)
    _spare: list[torch.Tensor] = field(default_factory=list)
    _left_in_row: dict[int, int] = field(default_factory=dict)

    def run(self, image: torch.Tensor, reporter: ProgressReporter) -> None:
        import torch

        plan, device = self.plan, image.device
        self._weights(device)
        tiles = [(row, col) for row in range(len(plan.ys)) for col in range(len(plan.xs))]
        self._left_in_row = {row: len(plan.xs) for row in range(len(plan.ys))}
        carry = torch.zeros(self.out_channels, plan.tile_h * plan.scale,
                            plan.width * plan.scale, device=device)
        state = _Flush(carry, 0, 0)
        for first in range(0, len(tiles), self.batch):
            reporter.check_abort()
            chunk = tiles[first:first + self.batch]
            self._run_batch(image, chunk)
            reporter.advance(len(chunk))
            self._flush_ready(state)

    def _weights(self, device: torch.device) -> None:
        import torch

        plan = self.plan
        self.wy = [torch.from_numpy(w).to(device) for w in plan.wy]
        self.wx = [torch.from_numpy(w).to(device) for w in plan.wx]
        self.wy_total = torch.from_numpy(plan.totals(plan.wy, plan.ys, plan.height)).to(device)
        self.wx_total = torch.from_numpy(plan.totals(plan.wx, plan.xs, plan.width)).to(device)

    def _run_batch(self, image: torch.Tensor, chunk: list[tuple[int, int]]) -> None:
        import torch

        plan, s = self.plan, self.plan.scale
        crops = [image[:, plan.ys[r]:plan.ys[r] + plan.tile_h, plan.xs[c]:plan.xs[c] + plan.tile_w]
                 for r, c in chunk]
        if self.fixed_batch and len(crops) < self.batch:
            crops += [crops[-1]] * (self.batch - len(crops))
        outputs = self.transform(torch.stack(crops))
        for i, (row, col) in enumerate(chunk):
            band = self._band(row, image.device)
            x = plan.xs[col]
            weight = self.wy[row][:, None] * self.wx[col][None, :]
            band[:, :, x * s:(x + plan.tile_w) * s] += outputs[i].float() * weight
            self._left_in_row[row] -= 1

    def _band(self, row: int, device: torch.device) -> torch.Tensor:
        import torch

        if row not in self._bands:
            plan = self.plan
            if self._spare:
                self._bands[row] = self._spare.pop().zero_()
            else:
                self._bands[row] = torch.zeros(self.out_channels, plan.tile_h * plan.scale,
                                               plan.width * plan.scale, device=device)
        return self._bands[row]

    def _flush_ready(self, state: _Flush) -> None:
        """Emit the finished output rows of every complete row, in order."""
        import torch

        plan, s = self.plan, self.plan.scale
        while state.row < len(plan.ys) and self._left_in_row[state.row] == 0:
            band = self._bands.pop(state.row)
            total = state.carry + band
            finished = plan.row_finished(state.row) * s
            done = state.done
            rows = total[:, :finished] / (self.wy_total[done:done + finished, None]
                                          * self.wx_total[None, :])
            self.emit(rows)
            state.carry = torch.cat([total[:, finished:], torch.zeros_like(total[:, :finished])],
                                    dim=1)
            state.done += finished
            state.row += 1
            self._spare.append(band)


@dataclass
class _Flush:
    carry: torch.Tensor  # contributions of earlier rows to the rows not yet emitted
    row: int  # the next row to emit
    done: int  # hi-res output rows emitted so far
