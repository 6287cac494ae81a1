"""Submitting jobs: shared by the v1 API and the compatibility APIs (one job system)."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any, TypeGuard

import anyio

from imgq.ai.costs import Estimate
from imgq.api.uploads import StagedFile, Upload
from imgq.dispatch.base import Dispatcher
from imgq.domain.access import Principal, Quotas
from imgq.domain.models import Item, Job
from imgq.domain.pipeline import StepSpec, parse_pipeline
from imgq.domain.status import Status
from imgq.errors import InvalidRequest
from imgq.ops.ai_support import estimate_pipeline, refuse_large_ai_inputs
from imgq.ops.base import BoundStep, refuse_large_outputs
from imgq.ops.image import INPUT_FORMATS, ImageInfo, Limits, probe
from imgq.store.repository import utcnow
from imgq.worker.runtime import Runtime
from imgq.worker.webhooks import accept_callback_url

log = logging.getLogger(__name__)


def limits_of(rt: Runtime) -> Limits:
    s = rt.settings
    return Limits(max_pixels=s.max_pixels, max_frames=s.max_frames,
                  reject_animated=s.animated.value == "reject")


def parse_ttl(rt: Runtime, raw: str | int | None) -> int:
    if raw in (None, ""):
        return rt.settings.ttl_seconds
    try:
        ttl = int(raw)
    except ValueError:
        raise InvalidRequest(f"ttl_seconds must be a whole number of seconds, got {raw!r}") from None
    if not 1 <= ttl <= rt.settings.max_ttl_seconds:
        raise InvalidRequest(f"ttl_seconds must be between 1 and {rt.settings.max_ttl_seconds}")
    return ttl


async def submit_job(
    rt: Runtime, dispatcher: Dispatcher | None, caller: Principal, upload: Upload,
    pipeline: str | list[Any] | list[StepSpec], ttl_seconds: int, source: str = "api",
    extra: dict[str, Any] | None = None, callback_url: str | None = None, base_url: str = "",
) -> Job:
    """`store_job` in a thread (its rows on the event loop where `rows_on_loop`), then
    `publish`. The staged uploads are the caller's to discard."""
    later = rows_on_loop(rt, caller, callback_url)
    job = await anyio.to_thread.run_sync(  # one hand-off for every check and the storing
        lambda: store_job(rt, caller, upload, pipeline, ttl_seconds, source, extra,
                          callback_url, base_url, rows=not later))
    if later:
        await store_rows(rt, job)
    publish(dispatcher, job)
    return job


def rows_on_loop(rt: Runtime, caller: Principal, callback_url: str | None) -> bool:
    """Are a submit's rows written on the API's event loop (`store_rows`), not by
    `store_job` in its thread? On PostgreSQL, for a job with no quotas to check and no
    webhook: one statement on the loop's own connection, with no pooled connection to test
    first, nor one more opened past the pool when many submits arrive at once."""
    return rt.repo.polls_on_loop and caller.quotas is None and not callback_url


async def store_rows(rt: Runtime, job: Job) -> None:
    """The rows of a job whose files `store_job(..., rows=False)` stored; the files are
    removed when that fails."""
    try:
        await rt.repo.create_job_on_loop(job)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(rt.blobs.delete, stored_keys(job))
        raise


def stored_keys(job: Job) -> list[str]:
    """The files a job's submit stored: its items' inputs and its attachments."""
    return [i.input_key for i in job.items if i.input_key] + [
        a["key"] for a in job.extra.get("attachments", {}).values()]


def store_job(
    rt: Runtime, caller: Principal, upload: Upload, pipeline: str | list[Any] | list[StepSpec],
    ttl_seconds: int, source: str = "api", extra: dict[str, Any] | None = None,
    callback_url: str | None = None, base_url: str = "", rows: bool = True,
) -> Job:
    """Check everything, then store files and rows (in the caller's thread, which may wait
    for the database and storage). Nothing is stored when a check fails. The job is the
    caller's. `rows=False`: the files only; the caller writes the rows (`store_rows`).

    Files sent in the 'attachments' field are not items: they are extra images the steps name
    (a style picture, a face), kept with the job. A pipeline that starts by making an image
    (generate) is sent with no files and makes one item with no input."""
    inputs = [f for f in upload.files if f.field != ATTACHMENTS]
    attached = [f for f in upload.files if f.field == ATTACHMENTS]
    if callback_url:
        callback_url = accept_callback_url(rt.settings, callback_url, caller.key is not None)
    specs = pipeline if _is_specs(pipeline) else parse_pipeline(pipeline)
    return _check_and_store(rt, caller, specs, inputs, attached, ttl_seconds, source,
                            extra or {}, callback_url, base_url, rows)


def publish(dispatcher: Dispatcher | None, job: Job) -> None:
    """Hand the job's stored items to the dispatcher; if that fails, the sweeper does it."""
    log.info("job %s: %d items queued (%s)", job.id, len(job.items), job.resource,
             extra={"job_id": job.id})
    if dispatcher is not None:
        # The rows are committed: if this publish is lost, the sweeper dispatches them later.
        try:
            dispatcher.submit([i.id for i in job.items], job.resource)
        except Exception:  # noqa: BLE001 - a broker down now must not lose the answer
            log.warning("job %s: publishing failed; the sweeper will dispatch its items",
                        job.id, exc_info=True, extra={"job_id": job.id})


def _check_and_store(rt: Runtime, caller: Principal, specs: list[StepSpec],
                     inputs: list[StagedFile], attached: list[StagedFile], ttl_seconds: int,
                     source: str, extra: dict[str, Any], callback_url: str | None,
                     base_url: str, rows: bool = True) -> Job:
    """`submit_job`'s checks in order (binding may read the models folder, probing reads each
    file's header), then the files and rows stored: the job, or the first refusal."""
    steps = rt.registry.bind(specs)
    rt.registry.check_inputs(steps, len(inputs), _attachment_names(attached))
    limits = limits_of(rt)
    infos = _probe_all(inputs, limits)
    sizes = [(f.name, i.width, i.height) for f, i in zip(inputs, infos)]
    for name, width, height in sizes:
        refuse_large_outputs(steps, name, width, height, rt.settings.max_output_pixels)
    refuse_large_ai_inputs(steps, sizes)  # docs/ai.md
    extras = _probe_all(attached, limits)
    estimates = _estimates(steps, infos)
    job = _new_job(rt, [s.to_dict() for s in steps], rt.registry.resource_of(steps),
                   ttl_seconds, source, extra, inputs, infos, estimates)
    if not inputs:
        refuse_large_outputs(steps, steps[0].name, 0, 0, rt.settings.max_output_pixels)
        job.items.append(_no_input_item(job, steps[0].name, estimate_pipeline(steps, 0, 0)))
        job.item_count = 1
    job.owner = caller.scope.owner
    if caller.quotas is not None:  # refused before any file is stored
        rt.repo.check_quotas(job, caller.quotas)
    _store(rt, job, inputs, list(zip(attached, extras)), callback_url, base_url, caller.quotas,
           rows)
    return job


def _probe_all(files: list[StagedFile], limits: Limits) -> list[ImageInfo]:
    return [probe(f.path, f.name, limits, f.data) for f in files]


def _store(rt: Runtime, job: Job, inputs: list[StagedFile],
           attached: list[tuple[StagedFile, ImageInfo]], callback_url: str | None,
           base_url: str, quotas: Quotas | None, rows: bool = True) -> None:
    """The files into the blob store, then the rows (with `rows`), in one hand-off to a
    thread; on any failure no file is left."""
    stored: list[str] = []
    try:
        for item, staged in zip(job.items, inputs):
            rt.blobs.put_file(item.input_key, staged.path)
            stored.append(item.input_key)
        for index, (staged, info) in enumerate(attached):
            key = f"{job.id}/attachments/{index}.{INPUT_FORMATS[info.format][2]}"
            rt.blobs.put_file(key, staged.path)
            stored.append(key)
            job.extra.setdefault("attachments", {})[staged.name] = {
                "key": key, "format": info.format, "width": info.width, "height": info.height}
        if rows:
            rt.repo.create_job(job, callback_url, base_url, quotas)
    except BaseException:
        rt.blobs.delete(stored)
        raise


ATTACHMENTS = "attachments"


def _attachment_names(attached: list[StagedFile]) -> set[str]:
    names = [f.name for f in attached]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise InvalidRequest(f"two attachments are named {doubled[0]!r}: steps name "
                             "attachments by file name, so each needs its own")
    return set(names)


def _no_input_item(job: Job, name: str, estimate: Estimate | None) -> Item:
    """The one item of a job whose first step makes its image: no input file. Its estimate
    where this machine has one (a checkpoint's first image has none)."""
    seconds = round(estimate.seconds, 1) if estimate is not None and estimate.seconds else None
    return Item(id=str(uuid.uuid4()), job_id=job.id, idx=0, status=Status.queued,
                input_name=f"{name}.png", queued_at=job.created_at, input_key="",
                input_meta={"estimated_seconds": seconds})


def _is_specs(pipeline: object) -> TypeGuard[list[StepSpec]]:
    return isinstance(pipeline, list) and bool(pipeline) and isinstance(pipeline[0], StepSpec)


def _estimates(steps: list[BoundStep], infos: list[ImageInfo]) -> list[float | None]:
    """Each image's estimated seconds of AI work (None without AI steps), from the costs
    measured on this machine (docs/ai.md)."""
    out: list[float | None] = []
    for info in infos:
        estimate = estimate_pipeline(steps, info.width, info.height)
        out.append(None if estimate is None else round(estimate.seconds, 1))
    return out


def _new_job(rt: Runtime, pipeline: list[dict[str, Any]], resource: str, ttl: int, source: str,
             extra: dict[str, Any], files: list[StagedFile], infos: list[ImageInfo],
             estimates: list[float | None]) -> Job:
    now = utcnow()
    job_id = str(uuid.uuid4())
    items = [
        Item(
            id=str(uuid.uuid4()), job_id=job_id, idx=idx, status=Status.queued,
            input_name=staged.name, queued_at=now,
            input_key=f"{job_id}/inputs/{idx}.{INPUT_FORMATS[info.format][2]}",
            input_meta={"format": info.format, "width": info.width, "height": info.height,
                        "bytes": info.bytes, "frames": info.frames,
                        "estimated_seconds": estimate},
        )
        for idx, (staged, info, estimate) in enumerate(zip(files, infos, estimates))
    ]
    return Job(id=job_id, created_at=now, expires_at=now + timedelta(seconds=ttl),
               pipeline=pipeline, resource=resource, item_count=len(items), source=source,
               extra=dict(extra), items=items)
