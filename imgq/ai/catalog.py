"""Models by name: the shipped ones, then the runnable files of the user's models folder.

This is the one module that knows both the registry of shipped models and the models folder,
so that neither the loader nor the folder scan needs the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from imgq.ai.descriptors import SHIPPED, ModelDescriptor
from imgq.ai.loading import LoadedModel, load_model
from imgq.ai.models_dir import user_descriptor

if TYPE_CHECKING:
    import torch


def find_descriptor(name: str | None, models_dir: Path | str | None = None) -> ModelDescriptor:
    """A shipped model by name, or a runnable model from the models folder."""
    if name is None or name in SHIPPED:
        return SHIPPED.get(name)
    if models_dir is not None:
        found = user_descriptor(Path(models_dir), name)
        if found is not None:
            return found
    return SHIPPED.get(name)  # raises ModelNotFound with the known names


def get_model(name: str | None, device: str | torch.device = "auto", precision: str = "fp32",
              models_dir: Path | str | None = None, compile_model: bool = False) -> LoadedModel:
    """The PyTorch module of a model by name (the torch extra must be installed)."""
    return load_model(find_descriptor(name, models_dir), device, precision, compile_model)
