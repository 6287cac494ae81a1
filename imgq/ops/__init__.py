"""Image operations, one per module, registered in one place."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from imgq.ops.base import Registry

if TYPE_CHECKING:
    from imgq.config import Settings


def _fill(registry: Registry, settings: Settings | None = None) -> None:
    from imgq.ops import (
        blur,
        brightness,
        contrast,
        crop,
        edge_enhance,
        edges,
        encode,
        flip,
        flop,
        grayscale,
        resize,
        rotate,
        saturation,
        sharpen,
        smooth,
        thumbnail,
    )

    modules = (
        grayscale, blur, sharpen, edges, smooth, edge_enhance,
        brightness, contrast, saturation,
        resize, thumbnail, crop, rotate, flip, flop,
        encode,
    )
    for module in modules:
        for op in module.OPERATIONS:
            registry.add(op)
    # AI operations (docs/ai.md): built with the settings; None reads them from the environment.
    from imgq.ops import (
        face_swap,
        generate,
        plugins,
        remove_background,
        style_transfer,
        upscale,
    )
    from imgq.ops.ai_support import AIConfig

    config = AIConfig.from_settings(settings) if settings is not None else None
    for op in (*upscale.operations(config), *remove_background.operations(config),
               *style_transfer.operations(config), *face_swap.operations(config),
               *generate.operations(config, _rules_file(settings))):
        registry.add(op)
    for op in plugins.plugin_operations(taken={op.name for op in registry}):
        registry.add(op)
    if config is not None:
        from imgq.ops.remote import check_inputs

        check_inputs(registry, config)


def _rules_file(settings: Settings | None) -> Path | None:
    return Path(settings.ai_prompt_rules) if settings and settings.ai_prompt_rules else None


def build_registry(settings: Settings | None = None) -> Registry:
    registry = Registry()
    _fill(registry, settings)
    return registry

