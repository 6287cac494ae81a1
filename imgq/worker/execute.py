"""execute(item_id): claim → run → store → finish, with the retry policy."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from imgq.domain.models import Claim
from imgq.domain.names import with_extension
from imgq.domain.retry import backoff
from imgq.errors import Cancelled, ImgqError, InvalidTransition, TransientError
from imgq.ops.image import OUTPUT_FORMATS
from imgq.worker.context import ItemContext
from imgq.worker.run import run_pipeline
from imgq.worker.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    status: str  # skipped | succeeded | failed | cancelled | retry | lost
    retry_in: float | None = None


def execute(rt: Runtime, item_id: str) -> Outcome:
    claim = rt.repo.claim(item_id, rt.settings.lease_seconds)
    if claim is None:
        log.debug("item %s not claimable (taken, finished or not due)", item_id)
        return Outcome("skipped")
    try:
        steps = rt.registry.restore(claim.job.pipeline)
    except ImgqError as exc:  # e.g. a model this worker does not have: no retry will help
        code, message = exc.code, exc.message
        log.error("item %s: %s", item_id, message, extra={"job_id": claim.job.id,
                                                         "item_id": item_id})
        return _guarded(claim, lambda: rt.repo.finish_failed(claim, code, message), "failed")
    ctx = ItemContext(rt.repo, claim, rt.settings.lease_seconds, rt.settings.item_time_limit_seconds,
                      len(steps))
    extra = ctx.log_extra
    log.info("item %s: running (attempt %d)", item_id, claim.item.attempts, extra=extra)
    fd, tmp_name = tempfile.mkstemp(prefix="result-", dir=_tmp_dir(rt))
    os.close(fd)
    target = Path(tmp_name)
    with ctx:
        try:
            with rt.blobs.open_local(claim.item.input_key) as source:
                log.info("item %s: input read", item_id, extra=extra)
                info = run_pipeline(steps, source, claim.item.input_meta["format"], target, ctx)
            return _store(rt, claim, ctx, target, info.format, info.__dict__)
        except Cancelled:
            log.info("item %s: cancelled", item_id, extra=extra)
            return _guarded(claim, lambda: rt.repo.finish_cancelled(claim, ctx.elapsed), "cancelled")
        except Exception as exc:  # every failure becomes a state, never a crash
            return _failed(rt, claim, ctx, exc)
        finally:
            target.unlink(missing_ok=True)  # moved into the store on success


def _tmp_dir(rt: Runtime) -> str | None:
    staging = rt.blobs.staging_dir()
    return str(staging) if staging else None


def _store(rt: Runtime, claim: Claim, ctx: ItemContext, target: Path, fmt: str,
           meta: dict[str, object]) -> Outcome:
    ext = OUTPUT_FORMATS[fmt][1]
    key = f"{claim.job.id}/results/{claim.item.idx}-{claim.token[:8]}.{ext}"
    log.info("item %s: storing %s (%s bytes)", claim.item.id, key, meta.get("bytes"),
             extra=ctx.log_extra)
    rt.blobs.put_file(key, target)
    name = with_extension(claim.item.input_name, ext)
    try:
        rt.repo.finish_succeeded(claim, key, name, meta, round(ctx.elapsed, 4))
    except InvalidTransition:
        rt.blobs.delete([key])  # a late worker: someone else owns the item now
        log.warning("item %s: result dropped, the claim was lost", claim.item.id,
                    extra=ctx.log_extra)
        return Outcome("lost")
    log.info("item %s: succeeded in %.3f s", claim.item.id, ctx.elapsed, extra=ctx.log_extra)
    return Outcome("succeeded")


def _failed(rt: Runtime, claim: Claim, ctx: ItemContext, exc: Exception) -> Outcome:
    error = _as_imgq_error(exc)
    extra = {**ctx.log_extra, "error_code": error.code}
    if error.transient and claim.item.attempts < rt.settings.max_attempts:
        delay = backoff(claim.item.attempts, rt.settings.retry_backoff_seconds)
        log.warning("item %s: transient error, retry in %.1f s: %s", claim.item.id, delay,
                    error.message, exc_info=exc, extra=extra)
        return _guarded(claim, lambda: rt.repo.retry_later(claim, delay, error.code,
                                                           error.message), "retry", delay)
    log.error("item %s: failed: %s", claim.item.id, error.message, exc_info=exc, extra=extra)
    message = error.message
    if error.transient:
        message = f"{message} (gave up after {claim.item.attempts} attempts)"
    return _guarded(claim, lambda: rt.repo.finish_failed(claim, error.code, message, ctx.elapsed),
                    "failed")


def _as_imgq_error(exc: Exception) -> ImgqError:
    if isinstance(exc, ImgqError):
        return exc
    if isinstance(exc, (OSError, MemoryError, ConnectionError)):
        return TransientError(f"temporary failure: {type(exc).__name__}")
    return ImgqError("internal error while processing the image; see the server log")


def _guarded(claim: Claim, action: object, status: str, retry_in: float | None = None) -> Outcome:
    try:
        action()  # type: ignore[operator]
    except InvalidTransition as exc:
        log.warning("%s", exc.message, extra={"job_id": claim.job.id, "item_id": claim.item.id})
        return Outcome("lost")
    return Outcome(status, retry_in)
