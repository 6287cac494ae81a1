"""Operations added by installed packages, through the ``imgq.operations`` entry point group.

A package declares, in its own pyproject.toml::

    [project.entry-points."imgq.operations"]
    style_transfer = "my_package.ops:StyleTransfer"

The entry point's name is the operation's name; what it points at is handed to the operation
registry as is (the registry decides what an operation object must look like). A plug-in that
fails to import is reported as unavailable with its error and never stops the service. Seed
003's model-backed task types that nothing provides are listed as unavailable with the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

logger = logging.getLogger(__name__)

GROUP = "imgq.operations"
SEED_TASKS = {
    "image_generation": "text-to-image generation",
    "face_swap": "face swapping",
    "style_transfer": "neural style transfer",
}


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
        logger.warning("plug-in operation failed to load",
                       extra={"operation": entry.name, "provider": provider, "error": str(exc)})
        return PluginOperation(entry.name, False, f"plug-in {provider} failed to load: {exc}",
                               provider)
    return PluginOperation(entry.name, True, None, provider, target)


def discover(group: str = GROUP) -> dict[str, PluginOperation]:
    """Every plug-in operation, plus an unavailable entry for each seed task nobody provides."""
    found: dict[str, PluginOperation] = {}
    for entry in entry_points(group=group):
        if entry.name in found:
            logger.warning("two plug-ins provide the same operation; keeping the first",
                           extra={"operation": entry.name, "ignored": entry.value})
            continue
        found[entry.name] = _load(entry)
    for name, what in SEED_TASKS.items():
        if name not in found:
            found[name] = PluginOperation(
                name, False, f"{what} needs a model that imgq does not ship; install a plug-in "
                             f"package that provides the '{name}' operation ({GROUP} entry point)")
    return found
