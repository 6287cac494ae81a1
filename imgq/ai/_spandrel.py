"""Import spandrel without torchvision.

spandrel 0.4.2 imports every architecture when it is imported, and two of them (LaMa, an
inpainting model, and RestoreFormer, a face restorer) do ``from torchvision.transforms.functional
import ...`` at module level. imgq uses neither, and torchvision has no CPU wheel next to the CPU
torch we install, so spandrel is installed with ``--no-deps`` and imported through this module.

The choice: when the real torchvision is importable we use it untouched. Otherwise we put a tiny
stand-in for ``torchvision.transforms.functional`` into ``sys.modules`` *only for the duration of
the spandrel import* and remove it straight after, so no other code ever sees a fake torchvision.
The stand-in implements ``normalize`` exactly (RestoreFormer keeps working); ``rotate`` (LaMa only)
raises a clear error if ever called. This keeps spandrel's full registry (all the SR/restoration
architectures a user may drop into the models folder) instead of hand-picking architecture
modules, whose private import paths change between spandrel releases.
"""

from __future__ import annotations

import enum
import importlib
import logging
import sys
import threading
import types
from typing import Any

logger = logging.getLogger(__name__)

_STUB_NAMES = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
_lock = threading.Lock()


class _InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


def _normalize(tensor: Any, mean: Any, std: Any, inplace: bool = False) -> Any:
    import torch

    mean_t = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    if inplace:
        return tensor.sub_(mean_t).div_(std_t)
    return (tensor - mean_t) / std_t


def _rotate(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("this architecture needs torchvision, which is not installed")


def _stub_modules() -> dict[str, types.ModuleType]:
    root = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode = _InterpolationMode  # type: ignore[attr-defined]
    functional.normalize = _normalize  # type: ignore[attr-defined]
    functional.rotate = _rotate  # type: ignore[attr-defined]
    transforms.functional = functional  # type: ignore[attr-defined]
    root.transforms = transforms  # type: ignore[attr-defined]
    return {"torchvision": root, "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional}


def _has_real_torchvision() -> bool:
    try:
        importlib.import_module("torchvision")
    except ImportError:
        return False
    return True


def import_spandrel() -> types.ModuleType:
    """Return the ``spandrel`` module, importing it with the stand-in when needed."""
    if "spandrel" in sys.modules:
        return sys.modules["spandrel"]
    with _lock:
        if "spandrel" in sys.modules:
            return sys.modules["spandrel"]
        if _has_real_torchvision():
            return importlib.import_module("spandrel")
        logger.debug("torchvision absent: importing spandrel with a temporary stand-in")
        saved = {name: sys.modules.get(name) for name in _STUB_NAMES}
        sys.modules.update(_stub_modules())
        try:
            return importlib.import_module("spandrel")
        finally:
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module
