"""The user's models folder (IMGQ_AI_MODELS_DIR): what is in it, and what each file turned out to be.

A scan never raises because of a file: a broken, unsupported or clashing file is listed with its
error, so one bad download never stops the service.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgq.ai.descriptors import SHIPPED, ModelDescriptor, WeightSource
from imgq.ai.errors import UnsupportedModel
from imgq.ai.loading import RUNNABLE_PURPOSES, WEIGHT_SUFFIXES, load_state_dict, spandrel_model

logger = logging.getLogger(__name__)

USER_LICENSE = "supplied by the server's operator"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    architecture: str | None = None
    scale: int | None = None
    descriptor: ModelDescriptor | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def public(self) -> dict[str, object]:
        return {"name": self.name, "file": self.path.name, "architecture": self.architecture,
                "scale": self.scale, "available": self.ok, "error": self.error}


_scan_cache: dict[tuple[str, int, int], ModelEntry] = {}
_scan_lock = threading.Lock()


def scan_models_dir(folder: Path | str | None) -> list[ModelEntry]:
    """Every file in the folder, in name order, as a runnable model or with its error."""
    if folder is None:
        return []
    root = Path(folder)
    if not root.is_dir():
        logger.warning("models folder does not exist", extra={"models_dir": str(root)})
        return []
    try:
        files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError as exc:
        logger.warning("models folder cannot be read", extra={"models_dir": str(root),
                                                             "error": str(exc)})
        return []
    return [_cached_entry(path) for path in files]


def _cached_entry(path: Path) -> ModelEntry:
    try:
        stat = path.stat()
    except OSError as exc:  # removed or unreadable between listing and now
        return ModelEntry(path.stem, path, error=_describe(exc))
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _scan_lock:
        if key not in _scan_cache:
            _scan_cache[key] = inspect_file(path)
        return _scan_cache[key]


def inspect_file(path: Path) -> ModelEntry:
    name = path.stem
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        return ModelEntry(name, path, error=f"unsupported file type {path.suffix or '(none)'!r}: "
                                            "use .safetensors or .pth")
    if name in SHIPPED:
        return ModelEntry(name, path, error=f"the name {name!r} is taken by a shipped model")
    if not all(importlib.util.find_spec(p) for p in ("torch", "spandrel", "safetensors")):
        return ModelEntry(name, path, error="models from the folder run on PyTorch, which is "
                                            "not installed: pip install 'imgq[torch]' (docs/ai.md)")
    try:
        model = spandrel_model(load_state_dict(path))
    except Exception as exc:  # noqa: BLE001 - any failure of a user's file is reported, not raised
        logger.warning("model file rejected", extra={"file": str(path), "error": str(exc)})
        return ModelEntry(name, path, error=_describe(exc))
    architecture, scale = model.architecture.name, int(model.scale)
    if model.purpose not in RUNNABLE_PURPOSES:
        return ModelEntry(name, path, architecture, scale,
                          error=f"a {model.purpose} model, not super-resolution or restoration")
    return ModelEntry(name, path, architecture, scale, descriptor=_descriptor(name, path, model))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, UnsupportedModel):
        return text
    return f"{type(exc).__name__}: {text}"[:300]


def _descriptor(name: str, path: Path, model: Any) -> ModelDescriptor:
    precisions = ("fp32",) + (("fp16",) if model.supports_half else ()) + (
        ("bf16",) if model.supports_bfloat16 else ())
    size = model.size_requirements
    return ModelDescriptor(
        name=name, title=f"{model.architecture.name} ×{model.scale} ({path.name})",
        architecture=model.architecture.name, scale=int(model.scale),
        source=WeightSource(path.suffix.lower().lstrip(".").replace("ckpt", "pth"), path=path),
        license=USER_LICENSE, in_channels=int(model.input_channels),
        out_channels=int(model.output_channels), precisions=precisions,
        size_alignment=max(1, int(size.multiple_of)), min_size=max(1, int(size.minimum)),
        supports_tiling=model.tiling.name != "INTERNAL", flops_per_pixel=_count_flops(model),
        tags=("user",))


def _count_flops(model: Any) -> float:
    """FLOPs per low-res pixel, counted on a small input; 0 when the count fails."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    size_req = model.size_requirements
    side = max(32, int(size_req.minimum))
    side += (-side) % max(1, int(size_req.multiple_of))
    sample = torch.rand(1, int(model.input_channels), side, side)
    try:
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            model.model.eval()(sample)
        return float(counter.get_total_flops()) / (side * side)
    except Exception:  # noqa: BLE001 - the estimate is optional
        return 0.0


def user_descriptor(folder: Path, name: str) -> ModelDescriptor | None:
    for entry in scan_models_dir(folder):
        if entry.name == name and entry.descriptor is not None:
            return entry.descriptor
    return None
