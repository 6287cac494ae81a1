"""The running item's context: progress, heartbeats, cancel and the time limit."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pyvips

from imgq.domain.models import Claim
from imgq.errors import Cancelled, InvalidParameters, TimeLimitExceeded
from imgq.ops.image import Image, decode
from imgq.store.repository import Repository
from imgq.worker.hooks import ItemHooks

log = logging.getLogger(__name__)
PROGRESS_EVERY = 0.5  # seconds between two progress writes
#: Below this many pixels (the item's input and its final image), the final image is computed
#: without libvips' progress callbacks: a few tens of milliseconds of work, done before a
#: progress write would be due, where a Python call per tile cost 3 % of a 2-MP item.
#: A cancel or the time limit still stops the computation (the heartbeat thread kills it).
MONITOR_PIXELS = 4_000_000
#: Exit status of a worker process that stopped itself because a step would not stop.
EXIT_STOPPED = 70

_hard_stop = {"allowed": False}


def allow_hard_stop() -> None:
    """In a worker process that a pool replaces when it exits: a step that does not stop
    within the kill grace after a cancel or the time limit ends the whole process."""
    _hard_stop["allowed"] = True


class ItemContext:
    def __init__(self, repo: Repository, claim: Claim, lease: float, time_limit: float,
                 steps: int, kill_grace: float = 3.0, cancel_poll: float = 1.0,
                 hooks: ItemHooks | None = None) -> None:
        self.repo, self.claim, self.lease = repo, claim, lease
        self.hooks = hooks or ItemHooks()
        self.started = time.monotonic()
        self.time_limit = time_limit
        self.deadline = self.started + time_limit
        self.steps = max(1, steps)
        self.step_index = 0
        self.cancel_requested = False
        self.lost = False
        self.kill_grace, self.cancel_poll = kill_grace, cancel_poll
        self._abort_seen: float | None = None
        self._progress = (0, "starting")
        self._written = self.started  # the claim itself just wrote the lease
        self._polled = self.started
        self._computing: pyvips.Image | None = None  # the final image, once it is computed
        self._lock = threading.Lock()
        #: the job's attachments, name -> (local file, format), opened by the worker
        self.attachments: dict[str, tuple[Path, str]] = {}

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> ItemContext:
        _heartbeats.add(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _heartbeats.discard(self)

    def due(self) -> bool:
        return time.monotonic() - self._written >= self.lease / 3

    def watch(self) -> None:
        """The heartbeat thread's look at this item: keep the lease, notice a cancel within
        `cancel_poll` seconds, and stop a step that will not stop by itself."""
        now = time.monotonic()
        if self.due():
            self._beat(force=True)
        elif now - self._polled >= self.cancel_poll and not self.cancel_requested:
            self._polled = now
            try:
                self.cancel_requested = self.repo.cancel_requested(self.claim.job.id)
            except Exception:  # the next heartbeat will tell
                log.debug("cancel poll failed", exc_info=True, extra=self.log_extra)
        if not self.should_abort():
            return
        computing = self._computing
        if computing is not None:  # libvips stops at its next tile
            computing.set_kill(True)
        if self._abort_seen is None:
            self._abort_seen = now
        elif now - self._abort_seen >= self.kill_grace and _hard_stop["allowed"]:
            self._stop_hard()

    def _stop_hard(self) -> None:
        """The step ignored the abort (a native call that copies a whole image has no place
        to look): record why, then end this process; its pool starts a fresh one."""
        reason = "lost" if self.lost else "cancelled" if self.cancel_requested else "time limit"
        log.error("item %s: the step did not stop within %.0f s (%s); ending its worker "
                  "process", self.claim.item.id, self.kill_grace, reason, extra=self.log_extra)
        try:
            if reason == "cancelled":
                self.repo.finish_cancelled(self.claim, self.elapsed)
            elif reason == "time limit":
                error = self._time_limit_error()
                self.repo.finish_failed(self.claim, error.code, error.message, self.elapsed)
        except Exception:  # the lease runs out and the sweeper takes over
            log.warning("could not record the stop", exc_info=True, extra=self.log_extra)
        logging.shutdown()
        os._exit(EXIT_STOPPED)

    def _beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._written < PROGRESS_EVERY:
            return
        if not self._lock.acquire(blocking=False):
            return  # the other thread is writing this very moment
        try:
            self._written = now
            self._write()
        finally:
            self._lock.release()

    def _write(self) -> None:
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
        self.hooks.step(self.claim, index, name)
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
            raise self._time_limit_error()

    def _time_limit_error(self) -> TimeLimitExceeded:
        return TimeLimitExceeded(
            f"the item took longer than its time limit of {self.time_limit:g} s"
        )

    def attachment(self, name: str) -> Image:
        if name not in self.attachments:
            raise InvalidParameters(f"the job has no attachment named {name!r}")
        path, fmt = self.attachments[name]
        return decode(path, fmt)

    def monitor(self, image: pyvips.Image) -> None:
        """Follow libvips' evaluation of the final image: kill it on abort (the heartbeat
        thread, within its period), and progress with a kill at the next tile for a large one
        (MONITOR_PIXELS)."""
        self._computing = image
        meta = self.claim.item.input_meta or {}
        pixels = max(image.get("width") * image.get("height"),
                     int(meta.get("width") or 0) * int(meta.get("height") or 0))
        if pixels < MONITOR_PIXELS:
            return
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


class _Heartbeats:
    """One thread per process keeps the leases of its running items alive, also while a
    long native step (a big libvips or model call) gives no progress for a while."""

    def __init__(self) -> None:
        self._items: set[ItemContext] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, ctx: ItemContext) -> None:
        with self._lock:
            self._items.add(ctx)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True, name="heartbeats")
                self._thread.start()

    def discard(self, ctx: ItemContext) -> None:
        with self._lock:
            self._items.discard(ctx)

    def _run(self) -> None:
        while True:
            time.sleep(0.2)
            with self._lock:
                running = list(self._items)
            for ctx in running:
                ctx.watch()


_heartbeats = _Heartbeats()
