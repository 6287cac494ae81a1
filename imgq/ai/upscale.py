"""Super-resolution of numpy images with any model: the public entry point.

Where a model runs: on a CUDA GPU with PyTorch when one is there and the model has a PyTorch
form; otherwise on the CPU with the fastest installed runtime that runs it exactly, as
bench/bench_runtimes.py measured (``ModelDescriptor.cpu_runtimes``): OpenVINO or ncnn for the
shipped ncnn files and DAT light's shipped graph (no torch needed), PyTorch for the models
folder.

Per tile the model runs on RGB; a ×4 model asked for ×2 or ×3 is followed by an antialiased
bicubic downscale of that tile; the overlap blending hides the tile borders of that filter too.
Alpha is upscaled separately with bicubic interpolation in the same tiled pass: running it
through the model as a grey image would triple the cost for an edge quality nobody sees in a
mask. Grayscale images run as grey RGB and come back as luma.
"""

from __future__ import annotations

import logging
import math
from typing import Protocol

import numpy as np

from imgq.ai.array_upscale import ArrayTiledRun, ArrayTileTransform, pad_to
from imgq.ai.catalog import find_descriptor
from imgq.ai.cpu_nets import NETS, choose_runtime, runtime_installed, usable_cores
from imgq.ai.descriptors import ModelDescriptor
from imgq.ai.errors import AIUnavailable, DeviceUnavailable
from imgq.ai.estimate import estimate_cpu_seconds
from imgq.ai.layout import ImageLayout
from imgq.ai.options import DEFAULT_OVERLAP, MIN_TILE, UpscaleOptions
from imgq.ai.tiling import Progress, ProgressReporter, ShouldAbort, TilePlan
from imgq.ai.torch_upscale import TorchUpscaler
from imgq.errors import InvalidParameters

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_OVERLAP", "UpscaleOptions", "Upscaler", "upscale_array", "uses_torch"]

# The numpy path keeps tiles small for the same cache reason as torch on CPU.
MAX_TILE_ARRAY = 192


class Runner(Protocol):
    def run(self, arr: np.ndarray, progress: Progress | None = None,
            should_abort: ShouldAbort | None = None) -> np.ndarray: ...


def upscale_array(arr: np.ndarray, model: str | None = None, scale: int | None = None,
                  tile: int | None = None, device: str = "auto",
                  progress: Progress | None = None, should_abort: ShouldAbort | None = None,
                  **options: object) -> np.ndarray:
    """Upscale an (H, W), (H, W, 1|2|3|4) image of uint8, uint16 or float (0..1).

    Returns the same layout and dtype at ``scale`` × the size (default: the model's scale).
    """
    opts = UpscaleOptions(model=model, scale=scale, tile=tile, device=device, **options)  # type: ignore[arg-type]
    return Upscaler(opts).run(arr, progress, should_abort)


def Upscaler(opts: UpscaleOptions) -> Runner:  # noqa: N802 - reads as the class it stands for
    """The runner for these options: PyTorch (GPU, or a model only torch runs) or the numpy
    path on the model's fastest installed CPU runtime."""
    descriptor = find_descriptor(opts.model, opts.models_dir)
    scale = opts.scale or descriptor.scale
    if not 1 <= scale <= descriptor.scale:
        raise InvalidParameters(f"model {descriptor.name} upscales ×2..×{descriptor.scale}; "
                                f"×{scale} was asked")
    if uses_torch(descriptor, opts):
        return TorchUpscaler(opts, descriptor, scale)
    return ArrayUpscaler(opts, descriptor, scale)


def uses_torch(descriptor: ModelDescriptor, opts: UpscaleOptions) -> bool:
    """PyTorch when asked for, on a GPU, or when torch is the model's runtime here."""
    if opts.runtime == "torch":
        return True
    if opts.runtime != "auto":
        return False
    device = (opts.device or "auto").strip().lower()
    wants_gpu = device.startswith("cuda") or (device == "auto" and _cuda_available())
    if wants_gpu and descriptor.torch_form:
        return True
    if device.startswith("cuda"):
        raise DeviceUnavailable(f"model {descriptor.name} has no GPU form in imgq; it runs on "
                                "the CPU (set the device to auto or cpu)")
    return choose_runtime(descriptor) == "torch"


def _cuda_available() -> bool:
    if not runtime_installed("torch"):
        return False
    import torch

    return bool(torch.cuda.is_available())


class ArrayUpscaler:
    """The numpy tiled path on OpenVINO, onnxruntime or ncnn (no torch)."""

    def __init__(self, opts: UpscaleOptions, descriptor: ModelDescriptor, scale: int) -> None:
        if (opts.device or "auto").strip().lower() not in ("auto", "cpu"):
            raise DeviceUnavailable(f"model {descriptor.name} runs on the CPU here")
        self.opts, self.descriptor, self.scale = opts, descriptor, scale
        self.runtime = choose_runtime(descriptor, opts.runtime)
        if self.runtime == "torch":
            raise AIUnavailable(f"model {descriptor.name} runs on torch here")
        self.threads = opts.threads or usable_cores()
        self.forward = NETS.get(descriptor, self.runtime, self.threads)

    def run(self, arr: np.ndarray, progress: Progress | None = None,
            should_abort: ShouldAbort | None = None) -> np.ndarray:
        layout = ImageLayout.of(arr)
        d = self.descriptor
        image = np.ascontiguousarray(layout.hwc(arr).transpose(2, 0, 1))
        h = max(layout.height + (-layout.height) % d.size_alignment, d.min_size)
        w = max(layout.width + (-layout.width) % d.size_alignment, d.min_size)
        if d.graph_tile:  # a graph of one tile shape: every tile has it
            h, w = max(h, d.graph_tile), max(w, d.graph_tile)
        image = pad_to(image, h, w)
        tile = d.graph_tile or self._tile(h, w)
        plan = TilePlan.make(h, w, tile, self.opts.overlap, self.scale, d.size_alignment,
                             fixed=bool(d.graph_tile))
        transform = ArrayTileTransform(self.forward, layout, d.scale, self.scale)
        reporter = ProgressReporter(plan.count, progress, should_abort)
        estimated = self.opts.estimated_seconds
        reporter.announce(estimated if estimated is not None
                          else estimate_cpu_seconds(layout.width, layout.height, d, self.threads))
        out = ArrayTiledRun(plan, transform).run(image, reporter)
        return layout.finish(out[: layout.height * self.scale, : layout.width * self.scale])

    def _tile(self, h: int, w: int) -> int:
        d = self.descriptor
        tile = self.opts.tile or min(MAX_TILE_ARRAY, max(h, w))
        tile = max(tile, MIN_TILE, d.min_size)
        return tile - tile % d.size_alignment if tile % d.size_alignment else tile


def tile_count(height: int, width: int, tile: int, overlap: int = DEFAULT_OVERLAP) -> int:
    """How many tiles an image needs (for estimates): ceil per axis, like the plan."""
    per_axis = [1 if side <= tile else math.ceil((side - overlap) / (tile - overlap))
                for side in (height, width)]
    return per_axis[0] * per_axis[1]
