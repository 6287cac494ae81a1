"""What the AI operations share: their settings, and libvips images to numpy arrays and back.

Nothing here imports torch: the API process lists, validates and limits AI steps without it.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, runtime_checkable

import numpy as np
import pyvips

from imgq.ai.costs import MEASURED, CostBook, Estimate, book_at, default_path
from imgq.ai.remote import RemoteOptions
from imgq.config import RemoteEndpoint
from imgq.errors import Cancelled, DecodeError, InvalidParameters
from imgq.ops.base import BoundStep, StepContext
from imgq.ops.image import Image, vips_reason

if TYPE_CHECKING:
    from imgq.config import Settings

log = logging.getLogger(__name__)

#: libvips interpretations whose pixel values the models can take as they are.
_DIRECT = {"srgb", "rgb16", "b-w", "grey16", "rgb", "multiband"}


@dataclass(frozen=True)
class AIConfig:
    """The AI settings an operation needs, taken from Settings once."""

    models_dir: Path | None = None
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    tile: int = 0
    max_pixels_cpu: int = 0  # 0: no cap of its own
    max_pixels_gpu: int = 4_000_000
    costs_file: Path | None = None  # None: costs.default_path()
    threads: int = 1  # CPU threads of an AI worker process
    items_in_flight: int = 0  # items one AI worker process runs at once; 0: auto
    #: models served by a remote endpoint (IMGQ_AI_REMOTE_ENDPOINTS), and their tokens
    remote: Mapping[str, RemoteEndpoint] = field(default_factory=dict)
    remote_tokens: Mapping[str, str] = field(default_factory=dict, repr=False)
    remote_options: RemoteOptions = RemoteOptions()

    @classmethod
    def from_settings(cls, settings: Settings) -> AIConfig:
        return cls(models_dir=settings.ai_models_dir, device=settings.ai_device,
                   precision=settings.ai_precision, compile=settings.ai_compile,
                   tile=settings.ai_tile_pixels, max_pixels_cpu=settings.ai_max_pixels,
                   max_pixels_gpu=settings.ai_max_pixels_gpu, costs_file=settings.ai_costs_file,
                   threads=settings.ai_threads, items_in_flight=settings.ai_items_in_flight,
                   remote=dict(settings.ai_remote_endpoints),
                   remote_tokens=settings.remote_tokens(),
                   remote_options=RemoteOptions(
                       timeout_seconds=settings.ai_remote_timeout_seconds,
                       poll_seconds=settings.ai_remote_poll_seconds,
                       max_result_bytes=settings.ai_remote_max_result_bytes,
                       inline_bytes=settings.ai_remote_inline_bytes))

    def remote_for(self, operation: str) -> dict[str, RemoteEndpoint]:
        """The remote endpoints of one operation, model name → endpoint."""
        return {name: e for name, e in self.remote.items() if e.operation == operation}

    def costs(self) -> CostBook:
        """This machine's measured model costs."""
        return book_at(self.costs_file or default_path())

    @classmethod
    def from_environment(cls) -> AIConfig:
        from imgq.config import get_settings

        return cls.from_settings(get_settings())

    def runs_on_cuda(self) -> bool:
        """Whether models run on CUDA here: 'cpu'/'cuda…' as set; 'auto' asks torch once."""
        spec = self.device.strip().lower()
        if spec != "auto":
            return spec.startswith("cuda")
        return _cuda_present()

    def in_flight(self) -> int:
        """Items an AI worker process runs at once: as set, or 4 on CUDA and 1 on the CPU."""
        if self.items_in_flight:
            return self.items_in_flight
        return 4 if self.runs_on_cuda() else 1

    def max_pixels(self) -> int:
        return self.max_pixels_gpu if self.runs_on_cuda() else self.max_pixels_cpu


@functools.lru_cache(maxsize=1)
def _cuda_present() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def missing_packages(*names: str) -> list[str]:
    return [name for name in names if importlib.util.find_spec(name) is None]


# -- libvips <-> numpy ------------------------------------------------------------------------
@dataclass(frozen=True)
class ArrayImage:
    """An image as a numpy array the AI runtime takes: (H, W) or (H, W, 2|3|4), uint8/uint16."""

    array: np.ndarray
    icc: bytes | None  # carried over so that a tagged image keeps its colours


def to_array(image: Image) -> ArrayImage:
    src = image.vips
    sixteen = src.format == "ushort"
    if src.interpretation not in _DIRECT:  # CMYK, Lab, ...: to the RGB the models know
        src = src.colourspace("rgb16" if sixteen else "srgb")
    if src.format not in ("uchar", "ushort"):
        src = src.cast("uchar")  # libvips clips to 0..255
    if src.bands > 4:
        raise InvalidParameters(f"images with {src.bands} bands cannot be processed by a model")
    icc = src.get("icc-profile-data") if src.get_typeof("icc-profile-data") else None
    try:
        pixels = np.asarray(src.numpy())  # the whole decode happens here
    except pyvips.Error as exc:  # a loader's error is the input's fault, as at encoding
        raise DecodeError(f"the image is truncated or corrupt: {vips_reason(exc)}") from None
    return ArrayImage(pixels, icc)


def from_array(image: Image, array: np.ndarray, icc: bytes | None) -> Image:
    """Back to a libvips image interpreted by its bands and sample format."""
    bands = 1 if array.ndim == 2 else array.shape[2]
    grey = bands <= 2
    if array.dtype == np.uint16:
        interpretation = "grey16" if grey else "rgb16"
    else:
        interpretation = "b-w" if grey else "srgb"
    out = pyvips.Image.new_from_array(np.ascontiguousarray(array), interpretation=interpretation)
    if icc is not None and not grey:
        out = out.copy()
        out.set_type(pyvips.GValue.blob_type, "icc-profile-data", icc)
    return image.with_vips(out)


# -- cancel and the time limit ---------------------------------------------------------------
@contextmanager
def stopping_as_the_item_asks(ctx: StepContext) -> Iterator[None]:
    """A model run stopped between tiles ends as the item's own reason says: cancelled, or
    over its time limit (ctx.check raises which); a bare Cancelled when ctx has no reason."""
    try:
        yield
    except Cancelled:
        ctx.check()
        raise


def staged(ctx: StepContext, prefix: str) -> Callable[[float, str], None]:
    """A progress callback that prefixes the runtime's per-tile message with the step."""

    def report(fraction: float, stage: str) -> None:
        ctx.progress(fraction, f"{prefix}: {stage}")

    return report


def _is_a(kind: type, protocol: type) -> bool:
    """isinstance against a runtime-checkable protocol costs tens of microseconds (it looks up
    every member each time); operations have their methods on their class, so an answer per
    class holds for every instance. Asked for every file of every job at submit."""
    found = _KINDS.get((kind, protocol))
    if found is None:
        found = _KINDS[(kind, protocol)] = issubclass(kind, protocol)
    return found


_KINDS: dict[tuple[type, type], bool] = {}


# -- the AI pixel limit, checked when a job is submitted ------------------------------------
@runtime_checkable
class PixelLimited(Protocol):
    """An operation whose run time grows with the pixels it gets, and that has a limit."""

    def refuse_if_too_large(self, params: Any, width: int, height: int, name: str) -> None: ...


#: Steps after which the size reaching the next step is not known before the run; a limited
#: operation after one of them checks the size it gets when it runs instead.
SIZE_CHANGING = frozenset({"resize", "thumbnail", "crop"})


def _limited(op: object) -> TypeGuard[PixelLimited]:
    return _is_a(type(op), PixelLimited)


def refuse_large_ai_inputs(steps: Sequence[BoundStep], files: Sequence[tuple[str, int, int]]
                           ) -> None:
    """ImageTooLarge (413) for the first (name, width, height) over an AI step's limit."""
    for step in steps:
        if step.name in SIZE_CHANGING:
            return
        if _limited(step.op):
            for name, width, height in files:
                step.op.refuse_if_too_large(step.params, width, height, name)


# -- time estimates, given before the work starts -------------------------------------------
@runtime_checkable
class TimeEstimated(Protocol):
    """An operation that can say how long it will take on an image of a given size."""

    def estimate(self, params: Any, width: int, height: int) -> Estimate: ...


def _estimated(op: object) -> TypeGuard[TimeEstimated]:
    return _is_a(type(op), TimeEstimated)


def estimate_pipeline(steps: Sequence[BoundStep], width: int, height: int) -> Estimate | None:
    """Seconds the AI steps of a pipeline will take on a width×height image (each at the size
    the steps before it make), or None when it has none (then no step's output size is
    worked out: a worker asks this for every item)."""
    if not any(_estimated(step.op) for step in steps):
        return None
    total, basis, found = 0.0, MEASURED, False
    for step in steps:
        if _estimated(step.op):
            estimate = step.op.estimate(step.params, width, height)
            total += estimate.seconds
            basis = basis if estimate.basis == MEASURED else estimate.basis
            found = True
        width, height = step.op.output_size(width, height, step.params)
    return Estimate(total, basis) if found else None
