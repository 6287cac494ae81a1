"""Image operations, one per module, registered in one place."""

from __future__ import annotations

from functools import lru_cache

from imgq.ops.base import Registry


def _fill(registry: Registry) -> None:
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


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    registry = Registry()
    _fill(registry)
    return registry
