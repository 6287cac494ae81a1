"""The AI Upscaler (Next.js + FastAPI + Celery): the routes its own front end calls.

POST /api/jobs/upload (files, scale, method, ...) → {"job_ids": [...]}: one imgq job per file,
as the old system had one job per image. GET /api/jobs?ids=a,b (or ?limit=n) → jobs with the
fields its front end reads; GET /api/jobs/{id}/download, /original, /thumbnail; GET
/api/jobs/batch-download?ids=a,b (a ZIP); GET /api/jobs/queue-stats; POST /api/jobs/{id}/cancel
and /retry; GET /api/health. Methods map to imgq pipelines in ai_upscaler_methods. Errors
answer FastAPI's {"detail": ...} with the old system's codes: every refusal of an upload is a
400, an unknown job a 404 (docs/compat.md).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from imgq.api.compat import common
from imgq.api.thumbnails import thumbnail as render_thumbnail
from imgq.api.compat.ai_upscaler_methods import (
    CONVERT_FORMATS,
    METHODS,
    Options,
    parse_options,
    pipeline_for,
)
from imgq.api.deps import base_url
from imgq.api.service import limits_of
from imgq.api.uploads import StagedFile, Upload
from imgq.domain.models import Item, Job
from imgq.domain.names import unique_names
from imgq.domain.pipeline import parse_pipeline
from imgq.domain.status import Status
from imgq.errors import Gone, ImgqError, InvalidRequest, NotFound, Unavailable
from imgq.ops.ai_support import refuse_large_ai_inputs
from imgq.ops.image import probe
from imgq.store.repository import utcnow
from imgq.worker.runtime import Runtime

SOURCE = "compat:ai-upscaler"
TAG = "compat: AI Upscaler"
PREFIX = "/api/jobs"
THUMBNAIL_SIDE = 120
MAX_IDS = 200
RECENT_SCAN = 200
#: imgq item state -> the old system's job status.
STATUS_WORDS = {
    Status.queued: "queued",
    Status.running: "processing",
    Status.succeeded: "completed",
    Status.failed: "failed",
    Status.cancelled: "cancelled",
}
#: The old system refused every bad upload (too many files, too large, not an image) with 400.
UPLOAD_REFUSALS = frozenset({413, 415, 422})


def render_error(exc: ImgqError) -> tuple[int, Any]:
    status = 400 if exc.status_code in UPLOAD_REFUSALS else exc.status_code
    return status, {"detail": exc.message}


router = common.compat_router(TAG, render_error)
OPENAPI_TAG = common.tag_info(
    TAG, "the AI Upscaler (Next.js + FastAPI + Celery)",
    "Upload photos with a method (real_esrgan, swinir, esrgan, real_esrgan_anime with scale 2 "
    "or 4; background_remove with scale 1; convert with target_format); one job per file; "
    "poll the jobs; download each result or a ZIP. Switch off with "
    "IMGQ_COMPAT_AI_UPSCALER=false.")
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"],
    "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "scale": {"type": "integer", "enum": [1, 2, 4], "default": 4,
                  "description": "2 or 4; 1 for background_remove."},
        "method": {"type": "string", "enum": list(METHODS), "default": "real_esrgan"},
        "target_format": {"type": "string", "enum": list(CONVERT_FORMATS),
                          "description": "For convert only."},
        "quality": {"type": "integer", "minimum": 1, "maximum": 100,
                    "description": "For convert to jpeg or webp."},
        "denoise_first": {"type": "boolean", "default": False,
                          "description": "Accepted and recorded; imgq has no denoise step."},
        "face_enhance": {"type": "boolean", "default": False,
                         "description": "Accepted and recorded; imgq has no GFPGAN step."},
    }}}}}}


# -- upload -----------------------------------------------------------------------------------
def _pipeline(rt: Runtime, options: Options, upload: Upload) -> list[dict[str, Any]]:
    """The options' pipeline, once every file passed imgq's limits and the AI size limit:
    a refused upload makes no job at all."""
    problem = common.operation_problem(rt, options.operation)
    if problem:
        what = {"upscale": "AI upscaling", "remove_background": "Background removal"}.get(
            options.operation, options.operation)
        raise Unavailable(f"{what} is not available on this server: {problem}. Install "
                          "imgq's AI operations on the workers (see the README) and restart.")
    op = rt.registry.get(options.operation)
    pipeline = pipeline_for(rt.settings, options, "model" in op.params_model.model_fields)
    steps = rt.registry.bind(parse_pipeline(pipeline))  # a bad model name is refused here
    infos = [probe(f.path, f.name, limits_of(rt)) for f in upload.files]
    refuse_large_ai_inputs(steps, [(f.name, i.width, i.height)
                                   for f, i in zip(upload.files, infos)])
    return pipeline


def _extra(options: Options, fields: dict[str, str]) -> dict[str, Any]:
    flags = {name: fields.get(name, "false").strip().lower() == "true"
             for name in ("denoise_first", "face_enhance")}
    return {"scale": options.scale, "method": options.method,
            "target_format": options.target_format, "quality": options.quality, **flags}


@router.post(PREFIX + "/upload", summary="Upload images to upscale, convert or cut out",
             description="Compatibility route (AI Upscaler): one job per file; every file is "
             "checked (count, size, megapixels) before any job is made.",
             openapi_extra=UPLOAD_BODY)
async def upload_jobs(request: Request) -> dict[str, list[str]]:
    rt = common.runtime(request)
    upload = await common.receive(request, {"files", "files[]", "file"})
    try:
        options = parse_options(upload.fields)
        if not upload.files:
            raise InvalidRequest("No valid files")
        pipeline = await anyio.to_thread.run_sync(_pipeline, rt, options, upload)
        jobs = await _submit_each(request, upload, pipeline, _extra(options, upload.fields))
    finally:
        upload.discard()
    return {"job_ids": [j.id for j in jobs]}


async def _submit_each(request: Request, upload: Upload, pipeline: list[dict[str, Any]],
                       extra: dict[str, Any]) -> list[Job]:
    """One job per file; when one is refused (an AI size limit), those made are cancelled."""
    jobs: list[Job] = []
    try:
        for staged in upload.files:
            jobs.append(await common.submit(request, Upload(upload.fields, [staged]), pipeline,
                                            SOURCE, extra))
    except BaseException:
        for job in jobs:
            await common.cancel_job(request, job.id)
        raise
    return jobs


# -- the job as its front end reads it --------------------------------------------------------
def _gone(job: Job, item: Item) -> bool:
    """Its files are removed, or soon will be: the job's time is up."""
    return common.is_expired(job, item) or job.expires_at <= utcnow()


def status_word(job: Job, item: Item) -> str:
    """A cancelled job is cancelled at once, as in the old system, even while its worker is
    still stopping it."""
    state = common.outcome(item)
    if job.cancel_requested and state in (Status.queued, Status.running):
        return "cancelled"
    return STATUS_WORDS[state]


def _job_out(request: Request, job: Job) -> dict[str, Any]:
    item = job.items[0]
    word = status_word(job, item)
    url = f"{base_url(request)}{PREFIX}/{job.id}"
    kept = not _gone(job, item)
    return {
        "id": job.id, "status": word,
        "original_filename": item.input_name, "filename": item.input_name,
        "original_key": item.input_key if kept else None,
        "result_key": item.result_key if word == "completed" else None,
        "result_url": f"{url}/download" if word == "completed" and kept else None,
        "original_url": f"{url}/original" if kept else None,
        "thumbnail_url": f"{url}/thumbnail" if kept else None,
        "progress": item.progress if word == "processing" else None,
        "scale": job.extra.get("scale"), "method": job.extra.get("method"),
        "denoise_first": bool(job.extra.get("denoise_first", False)),
        "face_enhance": bool(job.extra.get("face_enhance", False)),
        "target_format": job.extra.get("target_format"), "quality": job.extra.get("quality"),
        "created_at": common.iso(job.created_at), "expires_at": common.iso(job.expires_at),
        "started_at": common.iso(item.started_at), "finished_at": common.iso(item.finished_at),
        "error_message": _error_message(word, item),
        "status_detail": item.stage if word in ("queued", "processing") else None,
    }


def _error_message(word: str, item: Item) -> str | None:
    if word == "cancelled":
        return "Cancelled by user"
    return item.error_message if word == "failed" else None


def _ids(raw: str) -> list[str]:
    return [i.strip() for i in raw.split(",") if i.strip()][:MAX_IDS]


async def _ours(request: Request, ids: list[str]) -> list[Job]:
    found = await common.load_jobs(request, ids)
    by_id = {j.id: j for j in found if j.source == SOURCE and j.items}
    return [by_id[i] for i in dict.fromkeys(ids) if i in by_id]


@router.get(PREFIX, summary="Jobs by id, or the most recent ones",
            description="Compatibility route (AI Upscaler): ids is a comma-separated list; "
            "unknown ids are left out.")
async def list_jobs(request: Request, ids: str | None = None,
                    limit: Annotated[int, Query(ge=1)] = 50) -> list[dict[str, Any]]:
    if ids:
        return [_job_out(request, j) for j in await _ours(request, _ids(ids))]
    found = await common.load_jobs(request, None, RECENT_SCAN)
    now = utcnow()
    recent = [j for j in found if j.source == SOURCE and j.items and j.expires_at > now]
    return [_job_out(request, j) for j in recent[: min(limit, 100)]]


@router.get(PREFIX + "/queue-stats", summary="Jobs waiting and running",
            description="Compatibility route (AI Upscaler): the whole queue, for its hint "
            "\"N in queue, M processing\".")
async def queue_stats(request: Request) -> dict[str, int]:
    counts = await anyio.to_thread.run_sync(common.runtime(request).repo.count_by_status)
    return {"queued": counts.get(Status.queued.value, 0),
            "processing": counts.get(Status.running.value, 0)}


async def _job(request: Request, job_id: str, missing: str = "Job not found"
               ) -> tuple[Job, Item]:
    job = await common.load_job(request, job_id, SOURCE)
    if job is None or not job.items:
        raise NotFound(missing)
    return job, job.items[0]


def _options_of(job: Job) -> Options:
    return Options(str(job.extra.get("method", "real_esrgan")), int(job.extra.get("scale", 4)),
                   job.extra.get("target_format"), job.extra.get("quality"))


# -- files ------------------------------------------------------------------------------------
@router.get(PREFIX + "/batch-download", summary="A ZIP of several jobs' results",
            description="Compatibility route (AI Upscaler): the completed, unexpired jobs "
            "among ids; 404 when there is none.",
            responses={200: {"content": {"application/zip": {}}}})
async def batch_download(request: Request, ids: str = "") -> StreamingResponse:
    if not ids.strip():
        raise InvalidRequest("ids required (comma-separated job IDs)")
    done = [j for j in await _ours(request, _ids(ids))
            if status_word(j, j.items[0]) == "completed" and not _gone(j, j.items[0])]
    if not done:
        raise NotFound("No completed, non-expired results to download")
    names = unique_names([_options_of(j).download_name(j.items[0].input_name) for j in done])
    entries = [(name, j.items[0]) for name, j in zip(names, done)]
    return await common.stream_archive(request, done[0], entries, "upscaled_batch.zip")


@router.get(PREFIX + "/{job_id}/download", summary="Download a job's result",
            description="Compatibility route (AI Upscaler): 404 until completed; 410 \"Result "
            "expired\" once the job's time is up.",
            responses={200: {"content": {"image/png": {}}}})
async def download(job_id: str, request: Request) -> Response:
    job, item = await _job(request, job_id)
    if status_word(job, item) != "completed":
        raise NotFound("Result not available")
    if _gone(job, item):
        raise Gone("Result expired")
    name = _options_of(job).download_name(item.input_name)
    return await common.stream_result(request, job, item, name)


@router.get(PREFIX + "/{job_id}/original", summary="The uploaded image",
            description="Compatibility route (AI Upscaler): for its before/after slider.")
async def original(job_id: str, request: Request) -> Response:
    job, item = await _job(request, job_id, "Original not available")
    if _gone(job, item):
        raise NotFound("Original not available")
    return await common.stream_input(request, job, item)


@router.get(PREFIX + "/{job_id}/thumbnail", summary="A small JPEG of the uploaded image",
            description=f"Compatibility route (AI Upscaler): at most {THUMBNAIL_SIDE}×"
            f"{THUMBNAIL_SIDE} pixels.", responses={200: {"content": {"image/jpeg": {}}}})
async def thumbnail(job_id: str, request: Request) -> Response:
    job, item = await _job(request, job_id, "Thumbnail not available")
    if _gone(job, item):
        raise NotFound("Thumbnail not available")
    rt = common.runtime(request)
    body = await render_thumbnail(rt, item.input_key, item.input_name, THUMBNAIL_SIDE, "jpeg")
    return Response(body, media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=600"})


# -- cancel and retry -------------------------------------------------------------------------
@router.post(PREFIX + "/{job_id}/cancel", summary="Cancel a job",
             description="Compatibility route (AI Upscaler): a queued or processing job is "
             "cancelled at once (a running step stops at its next check); 400 for any other.")
async def cancel(job_id: str, request: Request) -> dict[str, Any]:
    job, item = await _job(request, job_id)
    if status_word(job, item) not in ("queued", "processing"):
        raise InvalidRequest("Job cannot be cancelled (not found or already "
                             "completed/failed/cancelled)")
    return _job_out(request, await common.cancel_job(request, job.id))


def _stage_copy(rt: Runtime, key: str) -> Path:
    """The blob's bytes in a new staging file (which submission moves into place)."""
    staging = rt.blobs.staging_dir()
    fd, name = tempfile.mkstemp(dir=staging, prefix="retry-")
    try:
        with open(fd, "wb") as out, rt.blobs.open_local(key) as source, source.open("rb") as src:
            shutil.copyfileobj(src, out)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


@router.post(PREFIX + "/{job_id}/retry", summary="Run a failed job again",
             description="Compatibility route (AI Upscaler): a new job with the same image and "
             "options; 400 unless the job failed.")
async def retry(job_id: str, request: Request) -> dict[str, Any]:
    job, item = await _job(request, job_id)
    if status_word(job, item) != "failed":
        raise InvalidRequest("Only failed jobs can be retried")
    rt = common.runtime(request)
    try:
        path = await anyio.to_thread.run_sync(_stage_copy, rt, item.input_key)
    except KeyError:
        raise InvalidRequest("Original file not available for retry") from None
    upload = Upload({}, [StagedFile("files", item.input_name, path)])
    try:
        new = await common.submit(request, upload, job.pipeline, SOURCE, dict(job.extra))
    finally:
        upload.discard()
    return _job_out(request, new)


# -- health -----------------------------------------------------------------------------------
@router.get("/api/health", summary="The database, storage and queue are reachable",
            description="Compatibility route (AI Upscaler): 503 with status degraded when one "
            "is down. checks.redis reports the queue under the name its front end reads: in "
            "imgq the queue is the database's item rows (a lost broker message is sent again "
            "by the sweeper).")
async def api_health(request: Request) -> JSONResponse:
    rt = common.runtime(request)
    checks: dict[str, str] = {}
    for name, ping in (("database", rt.repo.ping), ("storage", rt.blobs.ping)):
        try:
            await anyio.to_thread.run_sync(ping)
            checks[name] = "ok"
        except Exception:
            checks[name] = "error"
    checks["redis"] = checks["database"]
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "degraded", "checks": checks},
                        status_code=200 if ok else 503)


@router.get("/health", include_in_schema=False)
async def health() -> dict[str, str]:
    return {"status": "ok"}
