"""What happens to one batch of tiles on the device, and how results reach the host."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from imgq.ai.upscale import LUMA

if TYPE_CHECKING:
    import torch

    from imgq.ai.upscale import ImageLayout, Upscaler

logger = logging.getLogger(__name__)


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate" in text)


def release_memory(device: torch.device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class TileTransform:
    """(B, C, h, w) raw tiles → (B, C, h·s, w·s) float in 0..1 at the requested scale."""

    def __init__(self, upscaler: Upscaler, layout: ImageLayout) -> None:
        self.upscaler = upscaler
        self.layout = layout
        wrap = upscaler.opts.wrap_forward
        self.forward = wrap(self._model_forward) if wrap else self._model_forward

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        import torch

        tiles = raw.float() / self.layout.maximum
        colour = tiles[:, : self.layout.colour]
        rgb = colour.expand(-1, 3, -1, -1) if self.layout.colour == 1 else colour
        out = self._resize(self.forward(rgb))
        if self.layout.colour == 1:
            weights = torch.tensor(LUMA, device=out.device).view(1, 3, 1, 1)
            out = (out * weights).sum(dim=1, keepdim=True)
        if self.layout.has_alpha:
            out = torch.cat([out, self._upscale_alpha(tiles[:, -1:])], dim=1)
        return out

    def _model_forward(self, rgb: torch.Tensor) -> torch.Tensor:
        import torch

        loaded = self.upscaler.loaded
        out = self._run(loaded, rgb)
        if loaded.precision != "fp32" and not bool(torch.isfinite(out).all()):
            out = self._run(self.upscaler.fp32_fallback(), rgb)
        return out.float()

    @staticmethod
    def _run(loaded: object, rgb: torch.Tensor) -> torch.Tensor:
        import torch

        from imgq.ai.loading import LoadedModel

        assert isinstance(loaded, LoadedModel)
        x = rgb.to(loaded.dtype)
        if loaded.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return loaded.module(x)  # type: ignore[no-any-return]

    def _resize(self, out: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        model_scale = self.upscaler.descriptor.scale
        if self.upscaler.scale == model_scale:
            return out
        h, w = out.shape[-2:]
        size = (h // model_scale * self.upscaler.scale, w // model_scale * self.upscaler.scale)
        return F.interpolate(out, size=size, mode="bicubic", antialias=True, align_corners=False)

    def _upscale_alpha(self, alpha: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        s = self.upscaler.scale
        up = F.interpolate(alpha, scale_factor=s, mode="bicubic", align_corners=False)
        return up.clamp(0, 1)


class HostWriter:
    """Receives finished bands of the output, quantises them on the device, and copies them to
    a (pinned, on CUDA) host buffer; on CUDA the copies run on their own stream so they overlap
    with the next band's compute."""

    def __init__(self, device: torch.device, shape: tuple[int, int, int],
                 dtype: torch.dtype) -> None:
        import torch

        self.device, self.dtype = device, dtype
        cuda = device.type == "cuda"
        self.buffer = torch.empty(shape, dtype=dtype, pin_memory=cuda)
        self.stream = torch.cuda.Stream(device) if cuda else None  # type: ignore[no-untyped-call]
        self.row = 0
        self._keep: list[torch.Tensor] = []

    def write(self, band: torch.Tensor) -> torch.Tensor:
        import torch

        quantised = self._quantise(band).permute(1, 2, 0).contiguous()
        rows = quantised.shape[0]
        target = self.buffer[self.row:self.row + rows]
        self.row += rows
        if self.stream is None:
            target.copy_(quantised)
            return target
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            target.copy_(quantised, non_blocking=True)
        self._keep.append(quantised)  # must outlive the asynchronous copy
        return target

    def _quantise(self, band: torch.Tensor) -> torch.Tensor:
        import torch

        band = band.clamp(0, 1)
        if self.dtype == torch.uint8:
            return (band * 255).round_().to(torch.uint8)
        return band

    def result(self) -> torch.Tensor:
        if self.stream is not None:
            self.stream.synchronize()
            self._keep.clear()
        return self.buffer
