"""Hooks around an item's life: what cuts across every item (its log lines, its timings, what
an operator adds) is written once here, not threaded through `execute()`.

Each hook does nothing unless overridden. The time limit, cancel and progress live in the
item's context (`imgq.worker.context`), because steps ask it while they run.
"""

from __future__ import annotations

import logging
import time

from imgq.domain.models import Claim

log = logging.getLogger("imgq.worker.execute")


class ItemHooks:
    """Called by the worker around each item; every method is a no-op by default."""

    def started(self, claim: Claim) -> None:
        """The item was claimed and is about to run."""

    def step(self, claim: Claim, index: int, name: str) -> None:
        """Step `index` of the pipeline begins."""

    def ended(self, claim: Claim, outcome: str, note: str = "") -> None:
        """The item's end was written: succeeded, failed, cancelled, retry or lost."""


class Hooks(ItemHooks):
    """Several hooks, called in order; a hook that raises is logged, never fails the item."""

    def __init__(self, *hooks: ItemHooks) -> None:
        self.hooks = list(hooks)

    def started(self, claim: Claim) -> None:
        for hook in self.hooks:
            _guard(hook, claim, lambda h: h.started(claim))

    def step(self, claim: Claim, index: int, name: str) -> None:
        for hook in self.hooks:
            _guard(hook, claim, lambda h: h.step(claim, index, name))

    def ended(self, claim: Claim, outcome: str, note: str = "") -> None:
        for hook in self.hooks:
            _guard(hook, claim, lambda h: h.ended(claim, outcome, note))


class LogLines(ItemHooks):
    """An item's life in the log, with its job and item ids: running and its steps at DEBUG,
    each step's seconds included, and how it ended at INFO (failures are logged where they
    are classified, with their cause)."""

    def __init__(self) -> None:
        self._step_started: dict[str, tuple[str, float]] = {}

    def started(self, claim: Claim) -> None:
        log.debug("item %s: running (attempt %d)", claim.item.id, claim.item.attempts,
                  extra=_extra(claim))

    def step(self, claim: Claim, index: int, name: str) -> None:
        self._close_step(claim)
        self._step_started[claim.item.id] = (name, time.monotonic())
        log.debug("item %s: step %d %s", claim.item.id, index + 1, name, extra=_extra(claim))

    def ended(self, claim: Claim, outcome: str, note: str = "") -> None:
        self._close_step(claim)
        if outcome in ("succeeded", "cancelled"):
            log.info("item %s: %s %s", claim.item.id, outcome, note, extra=_extra(claim))

    def _close_step(self, claim: Claim) -> None:
        begun = self._step_started.pop(claim.item.id, None)
        if begun is not None:
            name, since = begun
            log.debug("item %s: %s took %.3f s", claim.item.id, name, time.monotonic() - since,
                      extra=_extra(claim))


def default_hooks() -> ItemHooks:
    return Hooks(LogLines())


def _extra(claim: Claim) -> dict[str, str]:
    return {"job_id": claim.job.id, "item_id": claim.item.id}


def _guard(hook: ItemHooks, claim: Claim, call: object) -> None:
    try:
        call(hook)  # type: ignore[operator]
    except Exception:
        log.warning("hook %s failed", type(hook).__name__, exc_info=True, extra=_extra(claim))
