"""What a caller can ask of an upscale run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

MIN_TILE = 32
DEFAULT_OVERLAP = 24
RUNTIMES = ("auto", "torch", "openvino", "onnxruntime", "ncnn")
Wrap = Callable[[Callable[["torch.Tensor"], "torch.Tensor"]], Callable[["torch.Tensor"], Any]]


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
    # "auto": PyTorch on a GPU, else the model's fastest installed CPU runtime (its descriptor's
    # cpu_runtimes, measured by bench/bench_runtimes.py); or one of them by name.
    runtime: str = "auto"
    threads: int | None = None  # CPU threads of a non-torch runtime; None: the usable cores
    # The caller's estimate of the run (this machine's measured costs), said before the first
    # tile; None: the reference figure of imgq.ai.estimate. After a tile, the pace measured.
    estimated_seconds: float | None = None
    # Torch path: run tiles in batches shared with the other items this process runs at the
    # same time on this model (imgq.ai.torch_batcher; IMGQ_AI_ITEMS_IN_FLIGHT above 1).
    share_batches: bool = False
    wrap_forward: Wrap | None = None  # test hook: wraps the model call (e.g. to inject an OOM)
