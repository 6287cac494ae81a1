"""The Dispatcher interface: how the API tells workers "look at item X"."""

from __future__ import annotations

from abc import ABC, abstractmethod


class Dispatcher(ABC):
    """A message only names an item; the database says what to do with it, so a duplicate
    or late message is harmless (the worker's claim is a guarded update)."""

    def start(self) -> None:
        """Start whatever the dispatcher runs (worker processes, connections)."""

    @abstractmethod
    def submit(self, item_ids: list[str], resource: str = "cpu", delay: float = 0.0) -> None:
        """Ask for the items to be run, after `delay` seconds."""

    def stop(self) -> None:
        """Stop; queued work stays in the database and is picked up at the next start."""

    def describe(self) -> dict[str, object]:
        return {"kind": type(self).__name__}
