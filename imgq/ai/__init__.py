"""The AI model runtime: descriptors, weight loading, device choice, tiled inference.

Importing ``imgq.ai`` imports neither torch nor onnxruntime; the names below load their module
on first use, so a server without a model runtime can still list models.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

_EXPORTS = {
    "SHIPPED": "imgq.ai.descriptors",
    "ModelDescriptor": "imgq.ai.descriptors",
    "upscale_array": "imgq.ai.upscale",
    "remove_background": "imgq.ai.background",
    "scan_models_dir": "imgq.ai.models_dir",
    "get_model": "imgq.ai.catalog",
    "estimate_cpu_seconds": "imgq.ai.estimate",
}

__all__ = sorted(_EXPORTS) + ["torch_available"]


def torch_available() -> bool:
    """Whether the torch extra is installed, checked without importing it."""
    return importlib.util.find_spec("torch") is not None


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'imgq.ai' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    return getattr(module, name)
