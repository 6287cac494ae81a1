"""Weights from files on disk only, into spandrel architectures, cached per process.

Two kinds of file are read, through spandrel's public ``ModelLoader``: ``.safetensors`` (no
code at all) and ``.pth``/``.ckpt`` through its restricted unpickler, which accepts only tensors
and ordered dicts. There is no unrestricted ``torch.load`` anywhere in imgq, and TorchScript
``.pt`` files are refused. The shipped ncnn files are converted by imgq.ai.ncnn_convert.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache

from imgq.ai._spandrel import import_spandrel
from imgq.ai.descriptors import ModelDescriptor
from imgq.ai.device import choose_precision, resolve_device, torch_dtype
from imgq.ai.errors import ModelLoadError, UnsupportedModel
from imgq.ai.ncnn_convert import convert_files

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".ckpt")
# spandrel purposes imgq can run as an image-to-image step.
RUNNABLE_PURPOSES = ("SR", "Restoration")
# Attention models reshape to tokens themselves: channels_last buys nothing there.
TOKEN_ARCHITECTURES = {"DAT", "SwinIR", "Swin2SR", "HAT", "ATD", "DRCT", "GRL", "RGT", "SRFormer",
                       "IPT", "Uformer", "FFTformer", "RetinexFormer"}


def load_state_dict(path: Path) -> dict[str, Any]:
    """Read a weight file safely, with spandrel's ModelLoader: ``.safetensors`` (no code), or
    ``.pth``/``.ckpt`` through its restricted unpickler (tensors and plain containers only).
    Keys come back canonicalised the way spandrel's architectures expect them."""
    import torch

    spandrel = import_spandrel()
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:  # ModelLoader would also take TorchScript .pt: refused
        raise UnsupportedModel(f"unsupported weight file type {suffix!r}: use .safetensors or .pth")
    loader = spandrel.ModelLoader("cpu")
    try:
        state = loader.load_state_dict_from_file(path)
    except RuntimeError as exc:
        if "explicit pickle_module" not in str(exc):  # TORCH_FORCE_WEIGHTS_ONLY_LOAD is set
            raise
        state = dict(spandrel.canonicalize_state_dict(
            torch.load(path, map_location="cpu", weights_only=True)))
    if not isinstance(state, dict):
        raise UnsupportedModel("the file does not hold a state dict")
    return dict(state)


def spandrel_model(state: dict[str, Any]) -> Any:
    """Detect the architecture from the state dict and build the spandrel model descriptor."""
    spandrel = import_spandrel()
    with warnings.catch_warnings():
        # DAT and Swin models call torch.meshgrid without indexing= inside spandrel.
        warnings.filterwarnings("ignore", message=r"torch\.meshgrid", category=UserWarning)
        try:
            return spandrel.MAIN_REGISTRY.load(state)
        except spandrel.UnsupportedModelError as exc:
            raise UnsupportedModel("spandrel does not recognise this model's architecture") from exc


def build_spandrel_model(descriptor: ModelDescriptor) -> Any:
    source = descriptor.source
    location = source.location()
    try:
        if source.format == "ncnn":
            state = convert_files(location.with_suffix(".param"), location.with_suffix(".bin"),
                                  descriptor.architecture)
        elif source.format in ("pth", "safetensors"):
            state = load_state_dict(location)
        else:
            raise UnsupportedModel(f"{descriptor.name} is not a PyTorch model")
    except OSError as exc:
        raise ModelLoadError(f"cannot read weights of {descriptor.name}: {exc}") from exc
    return spandrel_model(state)


@dataclass
class LoadedModel:
    descriptor: ModelDescriptor
    module: torch.nn.Module
    device: torch.device
    precision: str
    channels_last: bool
    load_seconds: float

    @property
    def dtype(self) -> torch.dtype:
        return torch_dtype(self.precision)


def prepare_module(module: torch.nn.Module, device: torch.device, precision: str,
                   channels_last: bool, compile_model: bool = False) -> torch.nn.Module:
    import torch

    module = module.eval().requires_grad_(False).to(device=device, dtype=torch_dtype(precision))
    if channels_last:
        module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if compile_model:
        module = torch.compile(module, dynamic=True)  # type: ignore[assignment]
    return module


class _Evicting(LRUCache[tuple[str, str, str, bool], "LoadedModel"]):
    def popitem(self) -> tuple[tuple[str, str, str, bool], LoadedModel]:
        key, model = super().popitem()
        logger.info("model evicted from cache", extra={"model": key[0]})
        return key, model


class ModelCache:
    """A small per-process LRU of ready-to-run models keyed by (model, device, precision)."""

    def __init__(self, size: int = 3) -> None:
        self._models: _Evicting = _Evicting(size)
        self._lock = threading.Lock()

    def get(self, descriptor: ModelDescriptor, device: torch.device, precision: str,
            compile_model: bool = False) -> LoadedModel:
        key = (descriptor.name, str(device), precision, compile_model)
        with self._lock:  # one load at a time: two workers never load the same model twice
            loaded = self._models.get(key)
            if loaded is None:
                loaded = self._models[key] = self._load(descriptor, device, precision,
                                                        compile_model)
            return loaded

    def _load(self, descriptor: ModelDescriptor, device: torch.device, precision: str,
              compile_model: bool) -> LoadedModel:
        started = time.perf_counter()
        spandrel_descriptor = build_spandrel_model(descriptor)
        channels_last = descriptor.architecture not in TOKEN_ARCHITECTURES
        module = prepare_module(spandrel_descriptor.model, device, precision, channels_last,
                                compile_model)
        seconds = time.perf_counter() - started
        logger.info("model loaded", extra={"model": descriptor.name, "device": str(device),
                                           "precision": precision, "seconds": round(seconds, 3)})
        return LoadedModel(descriptor, module, device, precision, channels_last, seconds)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


CACHE = ModelCache()


def load_model(descriptor: ModelDescriptor, device: str | torch.device = "auto",
               precision: str = "fp32", compile_model: bool = False) -> LoadedModel:
    """A ready-to-run PyTorch module of the model, from the per-process cache."""
    import torch

    resolved = device if isinstance(device, torch.device) else resolve_device(device)
    if precision == "auto":
        precision = choose_precision(descriptor, resolved)
    return CACHE.get(descriptor, resolved, precision, compile_model)
