"""Run items: claim → run → store → finish, with the retry policy.

Every failure is classified by cause (`imgq.worker.classify`): the server's trouble is retried
without spending the item's attempts, and only the image's or the pipeline's fault fails it.

`drain(rt, resource)` is what workers run: it takes the queue's due items one after another in
their fair order, writing each item's end and claiming the next in one transaction.
`execute(rt, item_id)` runs one named item (tools and tests).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TypeVar

from imgq.domain.models import Claim
from imgq.domain.retry import backoff
from imgq.errors import Cancelled, DecodeError, ImgqError, InputMissing, InvalidTransition
from imgq.ops.ai_support import estimate_pipeline
from imgq.ops.base import BoundStep, result_name
from imgq.ops.image import OUTPUT_FORMATS, ImageInfo
from imgq.store.repository import Finish, cancelled, failed, retry, succeeded, utcnow
from imgq.worker.classify import classify, storage_trouble
from imgq.worker.context import ItemContext
from imgq.worker.run import run_pipeline
from imgq.worker.runtime import Runtime

log = logging.getLogger(__name__)

#: A drain stops taking new items after this long, so a worker that was asked to stop (or a
#: Celery task holding its message) is never held for a whole queue; the items left keep
#: their own messages.
DRAIN_SECONDS = 5.0
MAX_INFRA_BACKOFF = 60.0  # seconds: an outage is retried at least once a minute
WRITE_TRIES = 5  # writes of an item's end tried while the database is unreachable

T = TypeVar("T")


class Unwritten(Exception):
    """The database stayed unreachable while an item's end was written."""


@dataclass(frozen=True)
class Outcome:
    status: str  # skipped | succeeded | failed | cancelled | retry | lost
    retry_in: float | None = None


@dataclass(frozen=True)
class Drained:
    """What one drain did: items run, and the item that needs a wake-up later (a retry)."""

    items: int
    more: bool  # it stopped while items may still be due (time budget or a retry)
    retry_item: str | None = None
    retry_in: float | None = None
    #: more items to wake later, (item, seconds), from items run side by side (drain_concurrently)
    later: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class _Ended:
    """An item run to its end, not yet written: the change to write and what follows it."""

    finish: Finish
    outcome: Outcome
    result_key: str | None = None  # the stored result, deleted if the finish is refused
    note: str = ""  # said in the log once the end is written


def execute(rt: Runtime, item_id: str) -> Outcome:
    try:
        claim = rt.repo.claim(item_id, rt.settings.lease_seconds)
    except Exception as exc:  # the database is down: the message comes back later
        return Outcome("retry", _database_down(rt, exc))
    _outage["streak"] = 0
    if claim is None:
        log.debug("item %s not claimable (taken, finished or not due)", item_id)
        return Outcome("skipped")
    ended = _run(rt, claim)
    try:
        _write(rt, lambda: rt.repo.finish(ended.finish))
    except InvalidTransition as exc:
        return _settled(rt, ended, exc.message)
    except Unwritten as exc:
        return _settled(rt, ended, str(exc))
    return _settled(rt, ended, None)


def drain(rt: Runtime, resource: str, budget: float = DRAIN_SECONDS,
          limit: int | None = None) -> Drained:
    """Run the queue's due items in fair order until none is due, one must wait for a retry,
    `budget` seconds have passed, or `limit` items have run."""
    lease = rt.settings.lease_seconds
    stop_at = time.monotonic() + budget
    try:
        claim = rt.repo.claim_next(resource, lease)
    except Exception as exc:  # the database is down: look again later
        return Drained(0, True, None, _database_down(rt, exc))
    _outage["streak"] = 0
    count = 0
    while claim is not None:
        ended = _run(rt, claim)
        go_on = (ended.outcome.status != "retry" and time.monotonic() < stop_at
                 and (limit is None or count + 1 < limit))
        try:
            refused, claim = _write(rt, lambda: rt.repo.finish_and_claim(
                ended.finish, resource if go_on else None, lease))
        except Unwritten as exc:  # its lease runs out and the sweeper requeues it
            _settled(rt, ended, str(exc))
            return Drained(count + 1, True, None, _database_down(rt, exc))
        outcome = _settled(rt, ended, refused)
        count += 1
        if outcome.status == "retry":
            return Drained(count, True, ended.finish.claim.item.id, outcome.retry_in)
        if not go_on:
            return Drained(count, True)
    return Drained(count, False)


#: How often a thread of `drain_concurrently` with nothing to run looks at the queue again.
IN_FLIGHT_POLL_SECONDS = 0.5


def drain_concurrently(rt: Runtime, resource: str, ways: int, budget: float = DRAIN_SECONDS,
                       limit: int | None = None) -> Drained:
    """`drain` with up to `ways` items at once, in threads of this process (AI items: they
    share the loaded models, their tiles share the model's batches, and one item's decoding,
    encoding and storage overlap another's model work). Each item is claimed, run, written
    and failed on its own exactly as `drain` does. A thread that finds nothing due looks again
    every IN_FLIGHT_POLL_SECONDS while another thread still runs an item, until `budget`
    seconds after the start, so an item submitted just after the others joins them."""
    if limit is not None:
        ways = min(ways, limit)
    if ways <= 1:
        return drain(rt, resource, budget, limit)
    stop_at = time.monotonic() + budget
    share = None if limit is None else max(1, limit // ways)
    results: list[Drained] = []
    lock = threading.Lock()
    busy = [0]

    def one() -> None:
        while True:
            with lock:
                busy[0] += 1
            try:
                drained = drain(rt, resource, max(0.0, stop_at - time.monotonic()), share)
            finally:
                with lock:
                    busy[0] -= 1
            with lock:
                results.append(drained)
                others = busy[0]
            if (drained.items or drained.more or not others
                    or time.monotonic() + IN_FLIGHT_POLL_SECONDS >= stop_at):
                return
            time.sleep(IN_FLIGHT_POLL_SECONDS)

    threads = [threading.Thread(target=one, name=f"item-{i}", daemon=True) for i in range(ways)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    retries = sorted((d for d in results if d.retry_in is not None),  # a retry, or the
                     key=lambda d: d.retry_in or 0.0)  # database down
    soonest = retries[0] if retries else None
    return Drained(sum(d.items for d in results), any(d.more for d in results),
                   soonest.retry_item if soonest else None,
                   soonest.retry_in if soonest else None,
                   tuple((d.retry_item, d.retry_in) for d in retries[1:]
                         if d.retry_item is not None and d.retry_in is not None))


_outage = {"streak": 0}  # looks at an unreachable database in a row, by this process


def _database_down(rt: Runtime, exc: BaseException) -> float:
    """How long to wait before the next look at a database that did not answer: growing with
    each look in a row (at most a minute), and said in the log once per outage."""
    cause = exc.__cause__ if isinstance(exc, Unwritten) and exc.__cause__ else exc
    _outage["streak"] += 1
    delay = backoff(_outage["streak"], rt.settings.retry_backoff_seconds, MAX_INFRA_BACKOFF)
    level = logging.WARNING if _outage["streak"] == 1 else logging.DEBUG
    log.log(level, "cannot reach the database (%s); trying again in %.1f s",
            classify(cause).message, delay)
    return delay


def _write(rt: Runtime, action: Callable[[], T]) -> T:
    """Write an item's end, trying again while the database is unreachable (a dropped
    connection, a restart): Unwritten when it stays so, and the item keeps its lease."""
    for attempt in range(1, WRITE_TRIES + 1):
        try:
            return action()
        except InvalidTransition:
            raise
        except Exception as exc:
            error = classify(exc)
            if not error.infrastructure:
                raise
            if attempt == WRITE_TRIES:
                raise Unwritten(f"could not record the item's end ({error.message}); it will "
                                "run again when its lease runs out") from exc
            time.sleep(backoff(attempt, 0.5, rt.settings.lease_seconds / 10))
    raise AssertionError("unreachable")


def time_limit(rt: Runtime, claim: Claim, steps: list[BoundStep]) -> float:
    """IMGQ_ITEM_TIME_LIMIT_SECONDS on top of twice the AI work estimated, at submission or now
    from this worker's latest figures, whichever is longer: a large photo upscaled on a CPU is
    accepted, and may take the time it was announced (or is now expected) to take."""
    meta = claim.item.input_meta or {}
    estimated = float(meta.get("estimated_seconds") or 0.0)
    made = bool(steps) and steps[0].op.makes_image  # its first step makes the image
    if (meta.get("width") and meta.get("height")) or made:
        now = estimate_pipeline(steps, int(meta.get("width") or 0), int(meta.get("height") or 0))
        estimated = max(estimated, now.seconds if now is not None else 0.0)
    return rt.settings.item_time_limit_seconds + 2 * estimated


def _run(rt: Runtime, claim: Claim) -> _Ended:
    item_id = claim.item.id
    try:
        steps = rt.steps_of(claim.job)
    except ImgqError as exc:  # e.g. a model this worker does not have: no retry will help
        log.error("item %s: %s", item_id, exc.message, extra={"job_id": claim.job.id,
                                                             "item_id": item_id})
        return _Ended(failed(claim, exc.code, exc.message, None), Outcome("failed"))
    s = rt.settings
    ctx = ItemContext(rt.repo, claim, s.lease_seconds, time_limit(rt, claim, steps), len(steps),
                      kill_grace=s.kill_grace_seconds, cancel_poll=s.cancel_poll_seconds,
                      hooks=rt.hooks)
    rt.hooks.started(claim)
    target = _staging_path(rt, claim)
    with ctx:
        try:
            with ExitStack() as files:
                source = _open_inputs(rt, claim, ctx, files)
                try:
                    info = run_pipeline(steps, source, claim.item.input_meta.get("format"),
                                        target, ctx)
                except DecodeError as exc:  # "write error" is a full disk as often as a bad file
                    raise storage_trouble(target.parent) or exc from None
            name = result_name(claim.item.input_name, steps, OUTPUT_FORMATS[info.format][1])
            return _store(rt, claim, ctx, target, info.format, _meta(info), name)
        except Cancelled:
            return _Ended(cancelled(claim, ctx.elapsed), Outcome("cancelled"))
        except Exception as exc:  # every failure becomes a state, never a crash
            return _failed(rt, claim, ctx, exc)
        finally:
            with contextlib.suppress(OSError):  # moved into the store on success
                target.unlink(missing_ok=True)  # (a read-only disk removes nothing)


def _open_inputs(rt: Runtime, claim: Claim, ctx: ItemContext, files: ExitStack) -> Path | None:
    """The item's input file (None for an item whose first step makes its image) and the
    job's attachments, local for as long as `files` is open."""
    for name, attached in claim.job.extra.get("attachments", {}).items():
        path = files.enter_context(_stored(rt, attached["key"], f"the attachment {name}"))
        ctx.attachments[name] = (path, attached["format"])
    if not claim.item.input_key:
        return None
    return files.enter_context(_stored(rt, claim.item.input_key, "the uploaded file of this "
                                                                  "image"))


@contextlib.contextmanager
def _stored(rt: Runtime, key: str, what: str) -> Iterator[Path]:
    try:
        with rt.blobs.open_local(key) as path:
            yield path
    except KeyError:
        raise InputMissing(f"{what} is no longer in storage; submit it again") from None


def _meta(info: ImageInfo) -> dict[str, object]:
    """The result's metadata; `details` only when a step reported some."""
    return {k: v for k, v in info.__dict__.items() if k != "details" or v}


def _staging_path(rt: Runtime, claim: Claim) -> Path:
    """A fresh name in the store's staging folder (the claim token is unique), so the result
    is moved, not copied, into the store; no file is made until the encoder writes it."""
    staging = rt.blobs.staging_dir() or Path(tempfile.gettempdir())
    return staging / f"result-{claim.token}"


def _store(rt: Runtime, claim: Claim, ctx: ItemContext, target: Path, fmt: str,
           meta: dict[str, object], name: str) -> _Ended:
    ext = OUTPUT_FORMATS[fmt][1]
    key = f"{claim.job.id}/results/{claim.item.idx}-{claim.token[:8]}.{ext}"
    rt.blobs.put_file(key, target)
    return _Ended(succeeded(claim, key, name, meta, round(ctx.elapsed, 4)),
                  Outcome("succeeded"), key, f"in {ctx.elapsed:.3f} s, {meta.get('bytes')} bytes")


def _failed(rt: Runtime, claim: Claim, ctx: ItemContext, exc: Exception) -> _Ended:
    error = classify(exc)
    extra = {**ctx.log_extra, "error_code": error.code}
    if error.infrastructure:
        return _infrastructure(rt, claim, ctx, error, exc)
    failures = claim.item.failures + 1
    if error.transient and failures < rt.settings.max_attempts:
        delay = backoff(failures, rt.settings.retry_backoff_seconds)
        log.warning("item %s: transient error, retry in %.1f s: %s", claim.item.id, delay,
                    error.message, exc_info=exc, extra=extra)
        return _Ended(retry(claim, delay, error.code, error.message), Outcome("retry", delay))
    log.error("item %s: failed: %s", claim.item.id, error.message, exc_info=exc, extra=extra)
    message = error.message
    if error.transient:
        message = f"{message} (gave up after {failures} attempts)"
    return _Ended(failed(claim, error.code, message, ctx.elapsed), Outcome("failed"))


def _infrastructure(rt: Runtime, claim: Claim, ctx: ItemContext, error: ImgqError,
                    exc: Exception) -> _Ended:
    """The server's trouble: retried without spending an attempt, until the item has waited
    as long as a queued item may (IMGQ_STUCK_AFTER_SECONDS)."""
    extra = {**ctx.log_extra, "error_code": error.code}
    waited = _seconds_since(claim.item.queued_at)
    if waited < rt.settings.stuck_after_seconds:
        delay = backoff(claim.item.attempts, rt.settings.retry_backoff_seconds,
                        MAX_INFRA_BACKOFF)
        log.warning("item %s: %s; retry in %.1f s", claim.item.id, error.message, delay,
                    exc_info=exc, extra=extra)
        return _Ended(retry(claim, delay, error.code, error.message, spend=False),
                      Outcome("retry", delay))
    message = (f"{error.message.removesuffix('; retrying')}: the server could not process "
               f"the image for {waited:.0f} s; this is not a problem with the image")
    log.error("item %s: gave up: %s", claim.item.id, message, exc_info=exc, extra=extra)
    return _Ended(failed(claim, error.code, message, ctx.elapsed), Outcome("failed"))


def _seconds_since(moment: datetime) -> float:
    return (utcnow() - moment).total_seconds()


def _settled(rt: Runtime, ended: _Ended, refused: str | None) -> Outcome:
    """After the end was written, or refused because another worker owns the item now (a
    late worker): then its result is dropped."""
    claim = ended.finish.claim
    if refused is None:
        rt.hooks.ended(claim, ended.outcome.status, ended.note)
        return ended.outcome
    if ended.result_key:
        _drop(rt, ended.result_key)
    log.warning("%s; result dropped", refused, extra={"job_id": claim.job.id,
                                                      "item_id": claim.item.id})
    rt.hooks.ended(claim, "lost")
    return Outcome("lost")


def _drop(rt: Runtime, key: str) -> None:
    try:
        rt.blobs.delete([key])
    except Exception:  # the sweeper removes results nobody recorded
        log.warning("could not delete %s now; the sweeper will", key, exc_info=True)
