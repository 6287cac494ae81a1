"""Operations from installed packages (the ``imgq.operations`` entry point group), as registry
entries.

A package declares, in its own pyproject.toml::

    [project.entry-points."imgq.operations"]
    style_transfer = "my_package.ops:StyleTransfer"

An entry point may name an Operation subclass (instantiated with no arguments) or an Operation
instance; its ``name`` must be the entry point's name. Anything else, or a plug-in that fails to
load, becomes an unavailable operation whose reason says why: GET /v1/operations lists it, and
a pipeline using it is refused with that reason.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from imgq.ops.base import Operation, StepContext
from imgq.ops.image import Image

log = logging.getLogger(__name__)


GROUP = "imgq.operations"


@dataclass(frozen=True)
class PluginOperation:
    name: str
    available: bool
    reason: str | None = None
    provider: str | None = None  # "package:object" the operation comes from
    target: object | None = None

    def public(self) -> dict[str, object]:
        return {"name": self.name, "available": self.available, "reason": self.reason,
                "provider": self.provider}


def _load(entry: EntryPoint) -> PluginOperation:
    provider = entry.value
    try:
        target = entry.load()
    except Exception as exc:  # noqa: BLE001 - a broken plug-in is reported, not fatal
        log.warning("plug-in operation failed to load",
                       extra={"operation": entry.name, "provider": provider, "error": str(exc)})
        return PluginOperation(entry.name, False, f"plug-in {provider} failed to load: {exc}",
                               provider)
    return PluginOperation(entry.name, True, None, provider, target)


def discover(group: str = GROUP) -> dict[str, PluginOperation]:
    """Every plug-in operation, by name."""
    found: dict[str, PluginOperation] = {}
    for entry in entry_points(group=group):
        if entry.name in found:
            log.warning("two plug-ins provide the same operation; keeping the first",
                           extra={"operation": entry.name, "ignored": entry.value})
            continue
        found[entry.name] = _load(entry)
    return found


class UnavailableOperation(Operation):
    """Offered by name, never run: see unavailable_reason."""

    def apply(self, image: Image, params: Any, ctx: StepContext) -> Image:
        raise AssertionError("an unavailable operation is refused when the pipeline is bound")


def unavailable(name: str, reason: str) -> Operation:
    cls = type(f"Unavailable_{name}", (UnavailableOperation,), {
        "name": name, "summary": f"{name.replace('_', ' ')} (plug-in operation; not installed)",
        "unavailable_reason": reason})
    return cls()  # type: ignore[no-any-return]


def _as_operation(plugin: PluginOperation) -> Operation:
    if not plugin.available:
        return unavailable(plugin.name, plugin.reason or "the plug-in is not available")
    target = plugin.target
    try:
        op = target() if isinstance(target, type) and issubclass(target, Operation) else target
    except Exception as exc:  # noqa: BLE001 - a broken plug-in is reported, not fatal
        log.warning("plug-in operation failed to start", extra={
            "operation": plugin.name, "provider": plugin.provider, "error": str(exc)})
        return unavailable(plugin.name, f"plug-in {plugin.provider} failed to start: {exc}")
    if not isinstance(op, Operation):
        return unavailable(plugin.name, f"plug-in {plugin.provider} does not provide an imgq "
                                        "Operation (a subclass of imgq.ops.base.Operation)")
    if op.name != plugin.name:
        return unavailable(plugin.name, f"plug-in {plugin.provider} names its operation "
                                        f"{op.name!r}, not {plugin.name!r}")
    return op


def plugin_operations(taken: Collection[str]) -> list[Operation]:
    """The plug-ins' operations, leaving out names a built-in operation already has."""
    ops = []
    for name, plugin in discover().items():
        if name in taken:
            log.warning("a plug-in operation has the name of a built-in one; ignoring it",
                        extra={"operation": name, "provider": plugin.provider})
            continue
        ops.append(_as_operation(plugin))
    return ops
