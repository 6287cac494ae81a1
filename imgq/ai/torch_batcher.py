"""Tiles of several images through one model in shared batches (items in flight on a device).

When one worker process runs several items at once (IMGQ_AI_ITEMS_IN_FLIGHT, threads sharing
the loaded model), each item's tiled pass hands its tiles to the model's ``TileBatcher`` instead
of calling the model itself. The batcher joins the tiles of one shape that the items have
waiting into one batch, up to the smallest batch any of them may run (their memory cap), runs
the model once, and gives every item its own slice of the output back; everything else (the
blending, the non-finite check, the copy to the host, progress, cancel) stays the item's.

When a batch runs:

- ``full``: the tiles waiting for one shape reach the cap;
- ``idle``: every item in the pass is waiting on the batcher, so no tile can join: a lone item
  never waits at all, and neither do items whose other tiles all wait;
- ``timeout``: an item in the pass is busy elsewhere (blending, a band's copy) and the oldest
  waiting tiles have waited ``wait_seconds`` (20 ms by default: small next to one batch on a
  GPU, which takes hundreds of ms).

One thread runs a batch at a time (the one whose wait ended it); the others wait for their
slices. A batch of several items that raises (out of memory, a failing layer) is run again item
by item, so each item gets its own result or its own error: one item's failure never fails its
neighbour. On CUDA (``pad``) a batch is filled up to a power of two with repeats of its last
tile, so cuDNN meets the same few shapes as before.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from imgq.ai.loading import LoadedModel

#: How long waiting tiles wait for another item's tiles while that item is busy elsewhere.
BATCH_WAIT_SECONDS = 0.02

Forward = Callable[["torch.Tensor"], "torch.Tensor"]


@dataclass
class BatchStats:
    """What a batcher did: for tests, the bench and the logs."""

    batches: int = 0  # model calls
    mixed: int = 0  # batches holding tiles of more than one item
    tiles: int = 0  # tiles run (without the padding)
    padded: int = 0  # repeats added to fill a batch up to its fixed size
    flushes: Counter[str] = field(default_factory=Counter)  # full | idle | timeout | alone


@dataclass(eq=False)
class _Request:
    tiles: torch.Tensor  # (n, C, h, w)
    owner: int  # the item's pass (a member id)
    limit: int  # the most tiles a batch holding these may have
    since: float
    result: torch.Tensor | None = None
    error: BaseException | None = None
    done: bool = False


class TileBatcher:
    """Shared batches of one loaded model for the items running in this process."""

    def __init__(self, forward: Forward, pad: bool = False,
                 wait_seconds: float = BATCH_WAIT_SECONDS) -> None:
        self.forward, self.pad, self.wait_seconds = forward, pad, wait_seconds
        self.stats = BatchStats()
        self._cond = threading.Condition()
        self._waiting: dict[tuple[int, ...], list[_Request]] = {}
        self._members: Counter[int] = Counter()  # member id -> passes running under it
        self._blocked = 0  # members inside run(), waiting for their slices
        self._busy = False  # a batch is running
        self._ids = 0

    @contextmanager
    def member(self) -> Iterator[int]:
        """One item's tiled pass: while it runs, the batcher may wait for its tiles."""
        with self._cond:
            self._ids += 1
            owner = self._ids
            self._members[owner] += 1
        try:
            yield owner
        finally:
            with self._cond:
                del self._members[owner]
                self._cond.notify_all()  # waiting tiles need not wait for this one any more

    @property
    def members(self) -> int:
        with self._cond:
            return len(self._members)

    def run(self, owner: int, tiles: torch.Tensor, limit: int) -> torch.Tensor:
        """The model's output for `tiles` (n, C, h, w), run in a batch with other items' tiles
        of the same shape; at most `limit` tiles in that batch."""
        request = _Request(tiles, owner, max(1, limit), time.monotonic())
        with self._cond:
            self._waiting.setdefault(tuple(tiles.shape[1:]), []).append(request)
            self._blocked += 1
            try:
                while not request.done:
                    if self._busy:  # its end wakes everyone
                        self._cond.wait()
                        continue
                    ready = self._ready()
                    if ready is None:
                        self._cond.wait(self._next_timeout())
                        continue
                    self._busy = True
                    self._cond.release()
                    try:
                        self._execute(*ready)
                    finally:
                        self._cond.acquire()
                        self._busy = False
                        self._cond.notify_all()
            finally:
                self._blocked -= 1
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    # -- under the lock ------------------------------------------------------------------------
    def _ready(self) -> tuple[list[_Request], str] | None:
        """The next batch to run, and why it runs now; None: wait for more tiles."""
        now = time.monotonic()
        everyone_waits = self._blocked >= len(self._members)
        for shape, requests in self._waiting.items():
            if not requests:
                continue
            cap = min(r.limit for r in requests)
            count = sum(r.tiles.shape[0] for r in requests)
            reason = ("full" if count >= cap else "idle" if everyone_waits
                      else "timeout" if now - requests[0].since >= self.wait_seconds else None)
            if reason is None:
                continue
            taken: list[_Request] = []
            total = 0
            for request in list(requests):
                n = request.tiles.shape[0]
                if taken and total + n > min(cap, *(r.limit for r in taken), request.limit):
                    break
                taken.append(request)
                total += n
                requests.remove(request)
            if not requests:
                del self._waiting[shape]
            return taken, reason
        return None

    def _next_timeout(self) -> float | None:
        oldest = [r[0].since for r in self._waiting.values() if r]
        if not oldest:
            return None
        return max(0.001, min(oldest) + self.wait_seconds - time.monotonic())

    # -- outside the lock ----------------------------------------------------------------------
    def _execute(self, requests: list[_Request], reason: str) -> None:
        owners = {r.owner for r in requests}
        try:
            self._deliver(requests, self._call(requests))
        except Exception as exc:
            if len(owners) == 1:
                for request in requests:
                    request.error = exc
            else:  # each item again on its own: its own result, or its own error
                for request in requests:
                    try:
                        self._deliver([request], self._call([request]))
                    except Exception as own:
                        request.error = own
                reason = "alone"
        finally:
            for request in requests:
                if request.result is None and request.error is None:  # interrupted
                    request.error = RuntimeError("the shared batch was interrupted")
                request.done = True
        with self._cond:
            self.stats.flushes[reason] += 1

    def _call(self, requests: list[_Request]) -> torch.Tensor:
        import torch

        parts = [r.tiles for r in requests]
        count = sum(p.shape[0] for p in parts)
        padded = count
        if self.pad:
            limit = min(r.limit for r in requests)
            padded = max(count, min(1 << (count - 1).bit_length(), limit))
            if padded > count:
                parts.append(parts[-1][-1:].expand(padded - count, *parts[-1].shape[1:]))
        batch = parts[0] if len(parts) == 1 else torch.cat(parts)
        output = self.forward(batch)
        with self._cond:
            self.stats.batches += 1
            self.stats.tiles += count
            self.stats.padded += padded - count
            self.stats.mixed += len({r.owner for r in requests}) > 1
        return output

    @staticmethod
    def _deliver(requests: list[_Request], output: torch.Tensor) -> None:
        start = 0
        for request in requests:
            n = request.tiles.shape[0]
            request.result = output[start:start + n]
            start += n


_batchers: dict[int, tuple[LoadedModel, TileBatcher]] = {}
_lock = threading.Lock()


def batcher_for(loaded: LoadedModel) -> TileBatcher:
    """The process's batcher of this loaded model (one per model, device and precision)."""
    from imgq.ai.inference import run_module

    with _lock:
        entry = _batchers.get(id(loaded))
        if entry is None or entry[0] is not loaded:
            batcher = TileBatcher(lambda tiles: run_module(loaded, tiles),
                                  pad=loaded.device.type == "cuda")
            # A model the cache dropped and loaded again gets a new batcher; the old goes.
            for key in [k for k, (m, _) in _batchers.items()
                        if (m.descriptor.name, str(m.device), m.precision)
                        == (loaded.descriptor.name, str(loaded.device), loaded.precision)]:
                del _batchers[key]
            entry = _batchers[id(loaded)] = (loaded, batcher)
        return entry[1]


def all_stats() -> dict[str, BatchStats]:
    """Each batcher's figures, by "model/device/precision"."""
    with _lock:
        return {f"{m.descriptor.name}/{m.device}/{m.precision}": b.stats
                for m, b in _batchers.values()}
