"""The running item's context: progress, heartbeats, cancel and the time limit."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pyvips

from imgq.domain.models import Claim
from imgq.errors import Cancelled, TimeLimitExceeded
from imgq.store.repository import Repository

log = logging.getLogger(__name__)
PROGRESS_EVERY = 0.5  # seconds between two progress writes


class ItemContext:
    def __init__(self, repo: Repository, claim: Claim, lease: float, time_limit: float,
                 steps: int) -> None:
        self.repo, self.claim, self.lease = repo, claim, lease
        self.started = time.monotonic()
        self.time_limit = time_limit
        self.deadline = self.started + time_limit
        self.steps = max(1, steps)
        self.step_index = 0
        self.cancel_requested = False
        self.lost = False
        self._progress = (0, "starting")
        self._written = 0.0
        self._stop = threading.Event()
        self._beater = threading.Thread(target=self._beat_loop, daemon=True,
                                        name=f"heartbeat-{claim.item.id[:8]}")

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> ItemContext:
        self._beater.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._beater.join(timeout=5)

    def _beat_loop(self) -> None:
        interval = max(0.2, self.lease / 3)
        while not self._stop.wait(interval):
            self._beat(force=True)

    def _beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._written < PROGRESS_EVERY:
            return
        self._written = now
        progress, stage = self._progress
        try:
            beat = self.repo.heartbeat(self.claim, self.lease, progress, stage)
        except Exception:  # a missed heartbeat is not fatal; the lease has slack
            log.warning("heartbeat failed", exc_info=True, extra=self.log_extra)
            return
        self.lost = self.lost or not beat.owned
        self.cancel_requested = self.cancel_requested or beat.cancel_requested

    # -- what steps use ---------------------------------------------------------------------
    def begin_step(self, index: int, name: str) -> None:
        self.step_index = index
        self.progress(0.0, f"step {index + 1}/{self.steps}: {name}")

    def progress(self, fraction: float, stage: str | None = None) -> None:
        overall = (self.step_index + max(0.0, min(1.0, fraction))) / self.steps
        self._progress = (min(99, int(overall * 100)), stage or self._progress[1])
        self._beat()

    def should_abort(self) -> bool:
        return self.cancel_requested or self.lost or time.monotonic() > self.deadline

    def check(self) -> None:
        if self.lost:
            raise Cancelled("another worker took this item over")
        if self.cancel_requested:
            raise Cancelled()
        if time.monotonic() > self.deadline:
            raise TimeLimitExceeded(
                f"the item took longer than its time limit of {self.time_limit:g} s"
            )

    def monitor(self, image: pyvips.Image) -> None:
        """Follow libvips' evaluation of the final image: progress, and kill on abort."""
        image.set_progress(True)

        def on_eval(img: pyvips.Image, prog: Any) -> None:
            self.progress(prog.percent / 100.0)
            if self.should_abort():
                img.set_kill(True)

        image.signal_connect("eval", on_eval)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def log_extra(self) -> dict[str, Any]:
        return {"job_id": self.claim.job.id, "item_id": self.claim.item.id}
