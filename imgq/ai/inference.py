"""What happens to one batch of tiles on the torch device, and how results reach the host.

Nothing here waits for the device: a non-finite reduced-precision output is recorded in a flag
on the device and read once, after the last tile (``TileTransform.nonfinite``); the host copies
run on their own stream into pinned buffers that are kept for the next run (``PinnedPool``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from imgq.ai.layout import LUMA, ImageLayout

if TYPE_CHECKING:
    import torch

    from imgq.ai.loading import LoadedModel

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


def run_module(loaded: LoadedModel, rgb: torch.Tensor) -> torch.Tensor:
    import torch

    x = rgb.to(loaded.dtype)
    if loaded.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return loaded.module(x)  # type: ignore[no-any-return]


class TileTransform:
    """(B, C, h, w) raw tiles → (B, C, h·s, w·s) float in 0..1 at the requested scale."""

    def __init__(self, loaded: LoadedModel, layout: ImageLayout, scale: int,
                 wrap: Callable[[Callable[[torch.Tensor], torch.Tensor]],
                                Callable[[torch.Tensor], torch.Tensor]] | None = None,
                 run_model: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.loaded, self.layout, self.scale = loaded, layout, scale
        # The model call: the module itself, or a batch shared with other items (torch_batcher).
        self.run_model = run_model or (lambda rgb: run_module(self.loaded, rgb))
        self.model_scale = loaded.descriptor.scale
        self.forward = wrap(self._model_forward) if wrap else self._model_forward
        self.nonfinite: torch.Tensor | None = None  # device flag, read once after the run

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

        out = self.run_model(rgb)
        if self.loaded.precision != "fp32":  # this item's own tiles only
            bad = ~torch.isfinite(out).all()
            self.nonfinite = bad if self.nonfinite is None else self.nonfinite | bad
        return out.float()

    def saw_nonfinite(self) -> bool:
        """One device→host read for the whole run."""
        return self.nonfinite is not None and bool(self.nonfinite)

    def _resize(self, out: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        if self.scale == self.model_scale:
            return out
        h, w = out.shape[-2:]
        size = (h // self.model_scale * self.scale, w // self.model_scale * self.scale)
        return F.interpolate(out, size=size, mode="bicubic", antialias=True, align_corners=False)

    def _upscale_alpha(self, alpha: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        up = F.interpolate(alpha, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return up.clamp(0, 1)


class PinnedPool:
    """Page-locked host buffers kept between runs: pinning is slow (a system call per page), so
    a buffer is pinned once and reused by every later run that fits in it.

    Runs at the same time (items in flight, in threads) each hold a slot (``slot()``) and get
    their slot's buffers, so there are as many sets of buffers as runs ever ran at once."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, int], torch.Tensor] = {}
        self._lock = threading.Lock()
        self._free: list[int] = []
        self._slots = 0
        self._local = threading.local()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """This thread's run uses one set of buffers, not shared with a concurrent run."""
        with self._lock:
            number = self._free.pop() if self._free else self._slots
            self._slots = max(self._slots, number + 1)
        self._local.slot = number
        try:
            yield
        finally:
            self._local.slot = None
            with self._lock:
                self._free.append(number)

    def take(self, purpose: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        import torch

        count = 1
        for side in shape:
            count *= side
        nbytes = count * torch.empty((), dtype=dtype).element_size()
        key = (purpose, getattr(self._local, "slot", None) or 0)
        with self._lock:
            buffer = self._buffers.get(key)
            if buffer is None or buffer.numel() < nbytes:
                buffer = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
                self._buffers[key] = buffer
        return buffer[:nbytes].view(dtype).view(shape)


PINNED = PinnedPool()


class HostWriter:
    """Receives finished bands of the output, quantises them on the device, and copies them to
    a host buffer (pinned and reused, on CUDA, where the copies run on their own stream so they
    overlap with the next tiles' compute)."""

    def __init__(self, device: torch.device, shape: tuple[int, int, int],
                 dtype: torch.dtype) -> None:
        import torch

        self.device, self.dtype = device, dtype
        cuda = device.type == "cuda"
        self.buffer = PINNED.take("output", shape, dtype) if cuda else torch.empty(shape,
                                                                                   dtype=dtype)
        self.stream = torch.cuda.Stream(device) if cuda else None  # type: ignore[no-untyped-call]
        self.row = 0
        self._keep: list[torch.Tensor] = []

    def write(self, band: torch.Tensor) -> None:
        import torch

        quantised = self._quantise(band).permute(1, 2, 0).contiguous()
        rows = quantised.shape[0]
        target = self.buffer[self.row:self.row + rows]
        self.row += rows
        if self.stream is None:
            target.copy_(quantised)
            return
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            target.copy_(quantised, non_blocking=True)
        self._keep.append(quantised)  # must outlive the asynchronous copy

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
