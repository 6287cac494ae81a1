"""Seed 000, AI Upscaler (Next.js + FastAPI + Celery): upscale photos 2× or 4×.

POST /api/jobs/upload (files, scale 2|4, method) → {"job_ids": [...]}: one imgq job per file,
as the seed had one job per image. GET /api/jobs?ids=a,b → a list of jobs (status queued |
processing | completed | failed | cancelled, original_filename, scale, method, expires_at,
error_message, result_url, ...); GET /api/jobs/{id}/download → the PNG, 404 while it is not
done, 410 "Result expired" once its files are gone; POST /api/jobs/{id}/cancel.

method: real_esrgan (the seed's "Standard") runs IMGQ_COMPAT_SEED000_STANDARD_MODEL; swinir
("Detailed") runs IMGQ_COMPAT_SEED000_DETAILED_MODEL, by default DAT light, a transformer of
SwinIR's family with true ×2 and ×4 weights (no package ships SwinIR's). The words standard
and detailed are accepted too. Errors answer FastAPI's {"detail": ...}, as the seed did.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import anyio
from fastapi import Query, Request, Response

from imgq.api.compat import common
from imgq.api.deps import base_url
from imgq.api.service import limits_of
from imgq.api.uploads import Upload
from imgq.domain.models import Item, Job
from imgq.domain.pipeline import parse_pipeline
from imgq.domain.status import Status
from imgq.errors import Gone, ImgqError, InvalidRequest, NotFound, Unavailable
from imgq.ops.image import probe
from imgq.store.repository import utcnow

SOURCE = "compat:ai-upscaler"
TAG = "compat: AI upscaler (seed 000)"
PREFIX = "/api/jobs"
METHODS = {"real_esrgan": "standard", "standard": "standard", "swinir": "detailed",
           "detailed": "detailed"}
SCALES = (2, 4)
#: imgq item state -> the seed's job status.
STATUS_WORDS = {
    Status.queued: "queued",
    Status.running: "processing",
    Status.succeeded: "completed",
    Status.failed: "failed",
    Status.cancelled: "cancelled",
}
RECENT_SCAN = 200


def render_error(exc: ImgqError) -> tuple[int, Any]:
    return exc.status_code, {"detail": exc.message}


router = common.compat_router(TAG, render_error)
OPENAPI_TAG = common.tag_info(
    TAG, "AI Upscaler (FastAPI + Celery, seed 000)",
    "Upload photos with scale 2 or 4 and method real_esrgan (standard) or swinir (detailed); "
    "one job per file; poll the jobs; download each PNG. Switch off with "
    "IMGQ_COMPAT_SEED000=false.")
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"],
    "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "scale": {"type": "integer", "enum": list(SCALES), "default": 4},
        "method": {"type": "string", "enum": list(METHODS), "default": "real_esrgan"},
    }}}}}}


def model_for(request: Request, method: str, scale: int) -> str:
    s = common.runtime(request).settings
    name = s.compat_seed000_standard_model if METHODS[method] == "standard" else (
        s.compat_seed000_detailed_model)
    return name.replace("{scale}", str(scale))


def _options(fields: dict[str, str]) -> tuple[int, str]:
    method = fields.get("method", "real_esrgan").strip().lower()
    if method not in METHODS:
        raise InvalidRequest("method must be real_esrgan or swinir (standard or detailed)")
    raw_scale = fields.get("scale", "4").strip()
    if raw_scale not in {str(s) for s in SCALES}:
        raise InvalidRequest("scale must be 2 or 4")
    return int(raw_scale), method


def _pipeline(request: Request, scale: int, method: str) -> list[dict[str, Any]]:
    rt = common.runtime(request)
    problem = common.operation_problem(rt, "upscale")
    if problem:
        raise Unavailable(f"AI upscaling is not available on this server: {problem}. Install "
                          "imgq's AI operations on the workers (see the README) and restart.")
    step: dict[str, Any] = {"op": "upscale", "scale": scale}
    if "model" in rt.registry.get("upscale").params_model.model_fields:
        step["model"] = model_for(request, method, scale)
    pipeline = [step, {"op": "encode", "format": "png"}]
    rt.registry.bind(parse_pipeline(pipeline))  # a bad model name is refused before any upload
    return pipeline


@router.post(PREFIX + "/upload", summary="Upload images to upscale",
             description="Compatibility route (seed 000): one job per file; every file is "
             "checked (count, size, megapixels) before any job is made.",
             openapi_extra=UPLOAD_BODY)
async def upload_jobs(request: Request) -> dict[str, list[str]]:
    rt = common.runtime(request)
    upload = await common.receive(request, {"files", "files[]", "file"})
    try:
        scale, method = _options(upload.fields)
        if not upload.files:
            raise InvalidRequest("No valid files")
        limits = limits_of(rt)
        for staged in upload.files:
            await anyio.to_thread.run_sync(probe, staged.path, staged.name, limits)
        pipeline = _pipeline(request, scale, method)
        jobs = [await common.submit(request, Upload(upload.fields, [staged]), pipeline, SOURCE,
                                    {"scale": scale, "method": method})
                for staged in upload.files]
    finally:
        upload.discard()
    return {"job_ids": [j.id for j in jobs]}


def _job_out(request: Request, job: Job) -> dict[str, Any]:
    item = job.items[0]
    state = common.outcome(item)
    done = state == Status.succeeded and not common.is_expired(job, item)
    return {
        "id": job.id, "status": STATUS_WORDS[state],
        "original_filename": item.input_name, "filename": item.input_name,
        "result_key": item.result_key, "scale": job.extra.get("scale"),
        "method": job.extra.get("method"),
        "result_url": f"{base_url(request)}{PREFIX}/{job.id}/download" if done else None,
        "created_at": common.iso(job.created_at), "expires_at": common.iso(job.expires_at),
        "started_at": common.iso(item.started_at), "finished_at": common.iso(item.finished_at),
        "error_message": item.error_message if state == Status.failed else None,
        "status_detail": item.stage,
    }


@router.get(PREFIX, summary="Jobs by id, or the most recent ones",
            description="Compatibility route (seed 000): ids is a comma-separated list; "
            "unknown ids are left out.")
async def list_jobs(request: Request, ids: str | None = None,
                    limit: Annotated[int, Query(ge=1)] = 50) -> list[dict[str, Any]]:
    wanted = [i.strip() for i in ids.split(",") if i.strip()][:200] if ids else None
    found = await common.load_jobs(request, wanted, RECENT_SCAN)
    ours = [j for j in found if j.source == SOURCE and j.items]
    return [_job_out(request, j) for j in ours[: min(limit, 100) if not ids else None]]


async def _job(request: Request, job_id: str) -> tuple[Job, Item]:
    job = await common.load_job(request, job_id, SOURCE)
    if job is None or not job.items:
        raise NotFound("Job not found")
    return job, job.items[0]


def _expired(job: Job, item: Item, now: datetime) -> bool:
    return common.is_expired(job, item) or job.expires_at < now


@router.get(PREFIX + "/{job_id}/download", summary="Download the upscaled PNG",
            description="Compatibility route (seed 000): 404 until completed; 410 \"Result "
            "expired\" once the job's time is up.",
            responses={200: {"content": {"image/png": {}}}})
async def download(job_id: str, request: Request) -> Response:
    job, item = await _job(request, job_id)
    if common.outcome(item) != Status.succeeded:
        raise NotFound("Result not available")
    if _expired(job, item, utcnow()):
        raise Gone("Result expired")
    stem = item.input_name.rsplit(".", 1)[0] if "." in item.input_name else item.input_name
    return await common.stream_result(request, job, item, f"{stem}_upscaled.png")


@router.post(PREFIX + "/{job_id}/cancel", summary="Cancel a job",
             description="Compatibility route (seed 000).")
async def cancel(job_id: str, request: Request) -> dict[str, Any]:
    job = await common.load_job(request, job_id, SOURCE)
    if job is None or not job.items or common.outcome(job.items[0]) not in (
            Status.queued, Status.running):
        raise InvalidRequest("Job cannot be cancelled (not found or already "
                             "completed/failed/cancelled)")
    return _job_out(request, await common.cancel_job(request, job.id))
