"""Super-resolution of numpy images with any loaded model: the public entry point.

Per tile the model runs on RGB; a ×4 model asked for ×2 or ×3 is followed by an antialiased
bicubic downscale of that tile on the device (torch's ``antialias=True``, the same filter family
Pillow uses for its high-quality reductions); the overlap blending hides the tile borders of
that filter too. Alpha is upscaled separately with bicubic interpolation in the same tiled pass:
running it through the model as a grey image would triple the cost for an edge quality nobody
sees in a mask. Grayscale images run as grey RGB and come back as luma.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from imgq.ai.device import choose_precision, free_memory, resolve_device
from imgq.ai.errors import OutOfMemory
from imgq.ai.estimate import estimate_cpu_seconds
from imgq.ai.loading import LoadedModel, find_descriptor, get_model
from imgq.ai.tiling import Progress, ProgressReporter, ShouldAbort, TiledRun, TilePlan
from imgq.errors import InvalidParameters

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

MIN_TILE = 32
MAX_TILE_GPU = 1024
# On CPU the time per pixel grows once a tile's activations outgrow the L3 cache (measured on a
# 2-core EPYC: 99 µs/px at 128 px, 106 at 192, 128 at 256 for RRDBNet), so CPU tiles stay small.
MAX_TILE_CPU = 192
DEFAULT_OVERLAP = 24
LUMA = (0.299, 0.587, 0.114)
Wrap = Callable[[Callable[["torch.Tensor"], "torch.Tensor"]], Callable[["torch.Tensor"], "torch.Tensor"]]


@dataclass
class UpscaleOptions:
    model: str | None = None
    scale: int | None = None
    tile: int | None = None
    overlap: int = DEFAULT_OVERLAP
    device: str = "auto"
    precision: str = "auto"
    models_dir: Path | str | None = None
    cpu_memory_budget: int | None = None
    compile_model: bool = False
    batch: int | None = None
    estimated_seconds: float | None = None  # the caller's estimate (measured costs), if any
    wrap_forward: Wrap | None = None  # test hook: wraps the model call (e.g. to inject an OOM)


def upscale_array(arr: np.ndarray, model: str | None = None, scale: int | None = None,
                  tile: int | None = None, device: str = "auto",
                  progress: Progress | None = None, should_abort: ShouldAbort | None = None,
                  **options: object) -> np.ndarray:
    """Upscale an (H, W), (H, W, 1|2|3|4) image of uint8, uint16 or float (0..1).

    Returns the same layout and dtype at ``scale`` × the size (default: the model's scale).
    """
    opts = UpscaleOptions(model=model, scale=scale, tile=tile, device=device, **options)  # type: ignore[arg-type]
    return Upscaler(opts).run(arr, progress, should_abort)


class Upscaler:
    def __init__(self, opts: UpscaleOptions) -> None:
        self.opts = opts
        self.device = resolve_device(opts.device)
        descriptor = find_descriptor(opts.model, opts.models_dir)
        precision = choose_precision(descriptor, self.device, opts.precision)
        self.loaded = get_model(opts.model, self.device, precision, opts.models_dir,
                                opts.compile_model)
        self.descriptor = self.loaded.descriptor
        self.scale = opts.scale or self.descriptor.scale
        if not 1 <= self.scale <= self.descriptor.scale:
            raise InvalidParameters(f"model {self.descriptor.name} upscales ×2..×"
                                    f"{self.descriptor.scale}; ×{self.scale} was asked")

    def run(self, arr: np.ndarray, progress: Progress | None = None,
            should_abort: ShouldAbort | None = None) -> np.ndarray:
        import torch

        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        layout = ImageLayout.of(arr)
        image = layout.to_device(arr, self.device)
        image, (h, w) = self._pad(image)
        tile = self.opts.tile or self.auto_tile(h, w)
        with torch.inference_mode():
            out = self._run_with_oom_retry(image, layout, tile, progress, should_abort)
        return layout.from_host(out[: layout.height * self.scale, : layout.width * self.scale])

    def _pad(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        import torch.nn.functional as F

        d = self.descriptor
        _, h, w = image.shape
        th = max(h + (-h) % d.size_alignment, d.min_size)
        tw = max(w + (-w) % d.size_alignment, d.min_size)
        if (th, tw) == (h, w):
            return image, (h, w)
        padded = F.pad(image[None].float(), (0, tw - w, 0, th - h), mode="replicate")[0]
        return padded.to(image.dtype), (th, tw)

    def auto_tile(self, h: int, w: int) -> int:
        budget = free_memory(self.device, self.opts.cpu_memory_budget)
        per_pixel = self.descriptor.memory_per_pixel * self.loaded.dtype.itemsize / 4
        per_pixel *= self.descriptor.scale**2 / 16 + 0.5  # hi-res activations dominate
        side = int(math.sqrt(budget / per_pixel))
        cap = MAX_TILE_GPU if self.device.type == "cuda" else MAX_TILE_CPU
        return self._align(min(side, cap, max(h, w)))

    def _align(self, tile: int) -> int:
        d = self.descriptor
        tile = max(tile, MIN_TILE, d.min_size)
        return tile - tile % d.size_alignment if tile % d.size_alignment else tile

    def _batch(self, plan: TilePlan) -> int:
        if self.opts.batch:
            return self.opts.batch
        if self.device.type != "cuda":
            return 1  # a CPU already fills its cores with one tile
        per_tile = (plan.tile_h * plan.tile_w * self.descriptor.memory_per_pixel
                    * self.loaded.dtype.itemsize / 4)
        fits = int(free_memory(self.device) // max(per_tile, 1))
        # cuDNN kernels index with 32 bits: keep hi-res feature maps under 2**31 elements.
        index_cap = 2**31 // max(1, plan.tile_h * plan.tile_w * 64 * self.descriptor.scale**2)
        return max(1, min(fits, index_cap, len(plan.xs), 8))

    def _run_with_oom_retry(self, image: torch.Tensor, layout: ImageLayout, tile: int,
                            progress: Progress | None, should_abort: ShouldAbort | None
                            ) -> torch.Tensor:
        from imgq.ai.inference import is_out_of_memory, release_memory

        while True:
            try:
                return self._run_once(image, layout, tile, progress, should_abort)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                release_memory(self.device)
                if tile // 2 < max(MIN_TILE, self.descriptor.min_size):
                    raise OutOfMemory(f"out of memory even with {tile} px tiles") from exc
                logger.warning("out of memory, halving the tile",
                               extra={"model": self.descriptor.name, "tile": tile})
                tile = self._align(tile // 2)

    def _run_once(self, image: torch.Tensor, layout: ImageLayout, tile: int,
                  progress: Progress | None, should_abort: ShouldAbort | None) -> torch.Tensor:
        from imgq.ai.inference import HostWriter, TileTransform

        _, h, w = image.shape
        plan = TilePlan.make(h, w, tile, self.opts.overlap, self.scale,
                             self.descriptor.size_alignment)
        transform = TileTransform(self, layout)
        writer = HostWriter(self.device, (h * self.scale, w * self.scale, layout.out_channels),
                            layout.host_dtype)
        run = TiledRun(plan, transform, layout.out_channels, writer.write, self._batch(plan))
        reporter = ProgressReporter(plan.count, progress, should_abort)
        if self.device.type == "cpu":
            reporter.announce(self.opts.estimated_seconds
                              or estimate_cpu_seconds(w, h, self.descriptor))
        run.run(image, reporter)
        return writer.result()

    def fp32_fallback(self) -> LoadedModel:
        logger.warning("non-finite output in reduced precision, falling back to fp32",
                       extra={"model": self.descriptor.name, "precision": self.loaded.precision})
        self.loaded = get_model(self.descriptor.name, self.device, "fp32", self.opts.models_dir,
                                self.opts.compile_model)
        return self.loaded


@dataclass(frozen=True)
class ImageLayout:
    """How the caller's array maps to the model's RGB input, and back."""

    height: int
    width: int
    channels: int  # 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA
    squeeze: bool  # the input was (H, W)
    dtype: np.dtype
    maximum: float

    @classmethod
    def of(cls, arr: np.ndarray) -> ImageLayout:
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4)):
            raise InvalidParameters(f"unsupported image shape {arr.shape}")
        if arr.dtype == np.uint8:
            maximum = 255.0
        elif arr.dtype == np.uint16:
            maximum = 65535.0
        elif np.issubdtype(arr.dtype, np.floating):
            maximum = 1.0
        else:
            raise InvalidParameters(f"unsupported pixel type {arr.dtype}")
        channels = 1 if arr.ndim == 2 else arr.shape[2]
        return cls(arr.shape[0], arr.shape[1], channels, arr.ndim == 2, arr.dtype, maximum)

    @property
    def colour(self) -> int:
        return 3 if self.channels >= 3 else 1

    @property
    def has_alpha(self) -> bool:
        return self.channels in (2, 4)

    @property
    def out_channels(self) -> int:
        return self.channels

    @property
    def host_dtype(self) -> torch.dtype:
        import torch

        return torch.uint8 if self.dtype == np.uint8 else torch.float32

    def to_device(self, arr: np.ndarray, device: torch.device) -> torch.Tensor:
        import torch

        hwc = arr[:, :, None] if arr.ndim == 2 else arr
        host = hwc if hwc.dtype == np.uint8 else hwc.astype(np.float32)
        tensor = torch.from_numpy(np.ascontiguousarray(host)).permute(2, 0, 1)
        if device.type == "cuda":
            # Whole low-res image in one pinned, asynchronous copy: it is small next to the output.
            return tensor.contiguous().pin_memory().to(device, non_blocking=True)
        return tensor

    def from_host(self, out: torch.Tensor) -> np.ndarray:
        array = out.numpy()
        if self.dtype == np.uint16:
            array = np.rint(array * 65535.0).clip(0, 65535).astype(np.uint16)
        elif self.dtype != np.uint8:
            array = array.astype(self.dtype, copy=False)
        return array[:, :, 0] if self.squeeze else np.ascontiguousarray(array)
