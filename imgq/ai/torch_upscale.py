"""Super-resolution with a PyTorch module: the GPU path, and torch on CPU for the models that
need it (DAT light, models from the folder).

On CUDA every tile has one square shape from a short list (``GPU_TILES``), a short image is
padded up to it, batches hold a power of two of tiles and a short last batch is filled up, so
cuDNN's autotuner meets a few shapes per process (5 tile sides × 5 batch sizes at most) and its
choice is reused by every later image; batches span tile rows. The
low-res image and the output travel through pinned host buffers kept between runs, the output
copies overlap with compute, and the only synchronisation is the end of the run (the host copy,
and one read of the non-finite flag of fp16/bf16 output, which reruns the image in fp32).
With ``share_batches`` (items in flight) the model calls go through the process's
``TileBatcher`` of the model, which joins the tiles of several images (imgq.ai.torch_batcher).
"""

from __future__ import annotations

import functools
import logging
import math
from contextlib import ExitStack
from typing import TYPE_CHECKING

import numpy as np

from imgq.ai.descriptors import ModelDescriptor
from imgq.ai.device import choose_precision, free_memory, resolve_device
from imgq.ai.errors import OutOfMemory
from imgq.ai.estimate import estimate_cpu_seconds
from imgq.ai.inference import (
    PINNED,
    HostWriter,
    TileTransform,
    is_out_of_memory,
    release_memory,
)
from imgq.ai.layout import ImageLayout
from imgq.ai.loading import LoadedModel, load_model
from imgq.ai.options import MIN_TILE, UpscaleOptions
from imgq.ai.tiling import Progress, ProgressReporter, ShouldAbort, TilePlan
from imgq.ai.torch_batcher import batcher_for
from imgq.ai.torch_tiling import TorchTiledRun

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

MAX_TILE_GPU = 1024
GPU_TILES = (128, 256, 512, 768, 1024)  # the tile shapes a GPU ever sees
MAX_BATCH_GPU = 16
# Tiles of several items in one batch on a CPU (share_batches): a CPU gains little from it, but
# the items still run one model call at a time instead of fighting over the cores.
MAX_SHARED_BATCH_CPU = 4
# On CPU the time per pixel grows once a tile's activations outgrow the L3 cache (measured on a
# 2-core EPYC: 99 µs/px at 128 px, 106 at 192, 128 at 256 for RRDBNet), so CPU tiles stay small.
MAX_TILE_CPU = 192


class TorchUpscaler:
    def __init__(self, opts: UpscaleOptions, descriptor: ModelDescriptor, scale: int) -> None:
        self.opts, self.descriptor, self.scale = opts, descriptor, scale
        self.device = resolve_device(opts.device)
        precision = choose_precision(descriptor, self.device, opts.precision)
        self.loaded = load_model(descriptor, self.device, precision, opts.compile_model)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def run(self, arr: np.ndarray, progress: Progress | None = None,
            should_abort: ShouldAbort | None = None) -> np.ndarray:
        import torch

        layout = ImageLayout.of(arr)
        with PINNED.slot():  # a run at the same time in another thread has its own buffers
            image = self._to_device(layout, arr)
            image, (h, w) = self._pad(image)
            tile = self._tile(h, w)
            if self.cuda:
                image, (h, w) = self._pad_to(image, max(h, tile), max(w, tile))
                torch.backends.cudnn.benchmark = True  # tile shapes come from GPU_TILES only
            with torch.inference_mode():
                out = self._run_with_oom_retry(image, layout, tile, progress, should_abort)
            result = out[: layout.height * self.scale, : layout.width * self.scale].numpy()
            # The host buffer is reused by the next run: hand out a copy.
            return layout.finish(np.array(self._host_values(result, layout), copy=True))

    @staticmethod
    def _host_values(array: np.ndarray, layout: ImageLayout) -> np.ndarray:
        if layout.dtype == np.uint16:
            return np.rint(array * 65535.0).clip(0, 65535).astype(np.uint16)
        if layout.dtype != np.uint8:
            return array.astype(layout.dtype, copy=False)
        return array

    def _to_device(self, layout: ImageLayout, arr: np.ndarray) -> torch.Tensor:
        import torch

        hwc = layout.hwc(arr)
        host = hwc if hwc.dtype == np.uint8 else hwc.astype(np.float32)
        if not self.cuda:
            return torch.from_numpy(np.ascontiguousarray(host)).permute(2, 0, 1)
        dtype = torch.uint8 if host.dtype == np.uint8 else torch.float32
        staging = PINNED.take("input", host.shape, dtype)
        staging.numpy()[...] = host
        # Whole low-res image in one asynchronous copy: it is small next to the output.
        return staging.to(self.device, non_blocking=True).permute(2, 0, 1)

    def _pad(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        d = self.descriptor
        _, h, w = image.shape
        return self._pad_to(image, max(h + (-h) % d.size_alignment, d.min_size),
                            max(w + (-w) % d.size_alignment, d.min_size))

    @staticmethod
    def _pad_to(image: torch.Tensor, th: int, tw: int) -> tuple[torch.Tensor, tuple[int, int]]:
        import torch.nn.functional as F

        _, h, w = image.shape
        if (th, tw) == (h, w):
            return image, (h, w)
        padded = F.pad(image[None].float(), (0, tw - w, 0, th - h), mode="replicate")[0]
        return padded.to(image.dtype), (th, tw)

    def _tile(self, h: int, w: int) -> int:
        wanted = self.opts.tile or self.auto_tile(h, w)
        if not self.cuda:
            return wanted
        # The smallest fixed shape that holds the image, or the largest that fits in memory.
        fitting = [t for t in GPU_TILES if t <= max(wanted, GPU_TILES[0])]
        holding = [t for t in fitting if t >= max(h, w)]
        return self._align(holding[0] if holding else fitting[-1])

    def auto_tile(self, h: int, w: int) -> int:
        budget = free_memory(self.device, self.opts.cpu_memory_budget)
        per_pixel = self.descriptor.memory_per_pixel * self.loaded.dtype.itemsize / 4
        per_pixel *= self.descriptor.scale**2 / 16 + 0.5  # hi-res activations dominate
        side = int(math.sqrt(budget / per_pixel))
        if self.cuda:
            return self._align(min(side, MAX_TILE_GPU))
        return self._align(min(side, MAX_TILE_CPU, max(h, w)))

    def _align(self, tile: int) -> int:
        d = self.descriptor
        tile = max(tile, MIN_TILE, d.min_size)
        return tile - tile % d.size_alignment if tile % d.size_alignment else tile

    def _batch(self, plan: TilePlan) -> int:
        """Tiles of this image per model call (per hand-over to the batcher when shared)."""
        if self.opts.batch:
            return self.opts.batch
        if not self.cuda:
            return 1  # a CPU already fills its cores with one tile
        return _floor_pow2(min(self._batch_cap(plan), plan.count))

    def _batch_cap(self, plan: TilePlan) -> int:
        """The most tiles of this plan's shape one model call may hold on this device."""
        if self.opts.batch:
            return self.opts.batch
        if not self.cuda:
            return MAX_SHARED_BATCH_CPU
        per_tile = (plan.tile_h * plan.tile_w * self.descriptor.memory_per_pixel
                    * self.loaded.dtype.itemsize / 4)
        fits = int(free_memory(self.device) // max(per_tile, 1))
        # cuDNN kernels index with 32 bits: keep hi-res feature maps under 2**31 elements.
        index_cap = 2**31 // max(1, plan.tile_h * plan.tile_w * 64 * self.descriptor.scale**2)
        return _floor_pow2(min(fits, index_cap, MAX_BATCH_GPU))  # 1..16: few shapes for cuDNN

    def _run_with_oom_retry(self, image: torch.Tensor, layout: ImageLayout, tile: int,
                            progress: Progress | None, should_abort: ShouldAbort | None
                            ) -> torch.Tensor:
        while True:
            try:
                return self._run_checked(image, layout, tile, progress, should_abort)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                release_memory(self.device)
                if tile // 2 < max(MIN_TILE, self.descriptor.min_size):
                    raise OutOfMemory(f"out of memory even with {tile} px tiles") from exc
                logger.warning("out of memory, halving the tile",
                               extra={"model": self.descriptor.name, "tile": tile})
                tile = self._align(tile // 2)

    def _run_checked(self, image: torch.Tensor, layout: ImageLayout, tile: int,
                     progress: Progress | None, should_abort: ShouldAbort | None
                     ) -> torch.Tensor:
        out, transform = self._run_once(image, layout, tile, progress, should_abort)
        if transform.saw_nonfinite():
            self.fp32_fallback()
            out, _ = self._run_once(image, layout, tile, progress, should_abort)
        return out

    def _run_once(self, image: torch.Tensor, layout: ImageLayout, tile: int,
                  progress: Progress | None, should_abort: ShouldAbort | None
                  ) -> tuple[torch.Tensor, TileTransform]:
        _, h, w = image.shape
        plan = TilePlan.make(h, w, tile, self.opts.overlap, self.scale,
                             self.descriptor.size_alignment, fixed=self.cuda)
        shared = self.opts.share_batches
        with ExitStack() as stack:
            run_model = None
            if shared:  # tiles go through the model with other items' tiles of this shape
                batcher = batcher_for(self.loaded)
                owner = stack.enter_context(batcher.member())
                run_model = functools.partial(batcher.run, owner, limit=self._batch_cap(plan))
            transform = TileTransform(self.loaded, layout, self.scale, self.opts.wrap_forward,
                                      run_model)
            writer = HostWriter(self.device, (h * self.scale, w * self.scale,
                                              layout.out_channels), _host_dtype(layout))
            # Shared batches are filled up to their fixed size by the batcher, not per item.
            run = TorchTiledRun(plan, transform, layout.out_channels, writer.write,
                                self._batch(plan), fixed_batch=self.cuda and not shared)
            reporter = ProgressReporter(plan.count, progress, should_abort)
            if not self.cuda:
                estimated = self.opts.estimated_seconds
                reporter.announce(estimated if estimated is not None
                                  else estimate_cpu_seconds(w, h, self.descriptor))
            run.run(image, reporter)
            return writer.result(), transform

    def fp32_fallback(self) -> LoadedModel:
        logger.warning("non-finite output in reduced precision, falling back to fp32",
                       extra={"model": self.descriptor.name, "precision": self.loaded.precision})
        self.loaded = load_model(self.descriptor, self.device, "fp32", self.opts.compile_model)
        return self.loaded


def _floor_pow2(n: int) -> int:
    n = max(1, n)
    return 1 << (n.bit_length() - 1)


def _host_dtype(layout: ImageLayout) -> torch.dtype:
    import torch

    return torch.uint8 if layout.dtype == np.uint8 else torch.float32
