"""Image operations, one per module, registered in one place."""

from __future__ import annotations

from functools import lru_cache

from imgq.ops.base import Registry


def _fill(registry: Registry) -> None:
    from imgq.ops import grayscale

    for module in (grayscale,):
        for op in module.OPERATIONS:
            registry.add(op)


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    registry = Registry()
    _fill(registry)
    return registry
