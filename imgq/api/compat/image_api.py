"""image-api: several images and one filter per job, a ZIP of the results.

POST /process-job (files, filter) → {"job_id", "task_ids"}; GET /status-job/{job_id};
GET /download/{job_id} (ZIP); GET /images/{job_id}/{filename}. One imgq job per request, one
item per image: the old system's job_id is the imgq job id and its task ids are the item ids. Like
the old system, results are JPEG files named <task id>.jpg, and errors answer
{"status": "error", "message": ...}.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request, Response
from fastapi.responses import JSONResponse

from imgq.api.compat import common
from imgq.domain.models import Item, Job
from imgq.domain.status import FINISHED, Status
from imgq.errors import ImgqError, InvalidRequest

SOURCE = "compat:image-api"
TAG = "compat: image-api"
FILTERS = ("blur", "sharpen", "grayscale", "edges", "smooth")
#: imgq item state -> the Celery task state the old system reported.
STATUS_WORDS = {
    Status.queued: "PENDING",
    Status.running: "STARTED",
    Status.succeeded: "SUCCESS",
    Status.failed: "FAILURE",
    Status.cancelled: "REVOKED",
}


def render_error(exc: ImgqError) -> tuple[int, Any]:
    return exc.status_code, {"status": "error", "message": exc.message}


router = common.compat_router(TAG, render_error)
OPENAPI_TAG = common.tag_info(
    TAG, "image-api (FastAPI + Celery)",
    "Upload several images with one filter (blur, sharpen, grayscale, edges, smooth), poll the "
    "job, download a ZIP. Switch off with IMGQ_COMPAT_IMAGE_API=false.")
# The filter is the query parameter, as the old system declared it: Swagger UI sends the one the
# person picks. A form field `filter` is still read (query first) but not declared, so that
# Swagger UI never sends a default that would override the choice.
UPLOAD_BODY = {
    "parameters": [{"name": "filter", "in": "query", "required": False,
                    "description": "The filter to apply.",
                    "schema": {"type": "string", "enum": list(FILTERS), "default": "blur"}}],
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["files"],
        "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
        }}}}},
}
FILTER_QUERY = Query(include_in_schema=False)


def _result_name(item: Item) -> str:
    return f"{item.id}.jpg"


def _task(job: Job, item: Item) -> dict[str, Any]:
    state = common.outcome(item)
    task: dict[str, Any] = {"task_id": item.id, "status": STATUS_WORDS[state],
                            "ready": state in FINISHED, "successful": state == Status.succeeded}
    if state == Status.succeeded:
        task["image_url"] = f"/images/{job.id}/{_result_name(item)}"
    elif state in FINISHED and item.error_message:
        task["error"] = item.error_message
    return task


def _not_found() -> JSONResponse:
    # The old system answers an unknown job with 200 and this body.
    return JSONResponse({"status": "error", "message": "job not found"})


@router.post("/process-job", summary="Upload images and apply a filter",
             description="Compatibility route (image-api).", openapi_extra=UPLOAD_BODY)
async def process_job(request: Request,
                      filter: Annotated[str | None, FILTER_QUERY] = None) -> dict[str, Any]:
    upload = await common.receive(request, {"files", "files[]", "file"})
    try:
        chosen = (filter or upload.fields.get("filter") or "blur").strip().lower()
        if chosen not in FILTERS:
            raise InvalidRequest(f"Unsupported filter: {chosen}; use one of {', '.join(FILTERS)}")
        if not upload.files:
            raise InvalidRequest("no images: send one or more files in the 'files' field")
        pipeline = [{"op": chosen}, {"op": "encode", "format": "jpeg"}]
        job = await common.submit(request, upload, pipeline, SOURCE, {"filter": chosen})
    finally:
        upload.discard()
    return {"job_id": job.id, "task_ids": [i.id for i in job.items]}


@router.get("/status-job/{job_id}", summary="Check processing status",
            description="Compatibility route (image-api). all_ready: every image finished; "
            "all_successful: every image succeeded; each result's image_url once done.")
async def status_job(job_id: str, request: Request) -> Response:
    job = await common.load_job(request, job_id, SOURCE)
    if job is None:
        return _not_found()
    tasks = [_task(job, i) for i in job.items]
    return JSONResponse({
        "job_id": job.id, "all_ready": all(t["ready"] for t in tasks),
        "all_successful": all(t["successful"] for t in tasks), "results": tasks,
    })


@router.get("/download/{job_id}", summary="Download a ZIP of the processed images",
            description="Compatibility route (image-api). Until every image has finished it "
            'answers {"status": "pending", ...}.',
            responses={200: {"content": {"application/zip": {}}}})
async def download(job_id: str, request: Request) -> Response:
    job = await common.load_job(request, job_id, SOURCE)
    if job is None:
        return _not_found()
    if any(common.outcome(i) not in FINISHED for i in job.items):
        return JSONResponse({"status": "pending", "message": "Images not ready"})
    if job.data_removed:
        return JSONResponse({"status": "error", "message": "the processed images expired and "
                             "were removed"}, status_code=410)
    done = [i for i in job.items if i.status == Status.succeeded and i.result_key]
    if not done:
        return JSONResponse({"status": "error", "message": "No images found in job folder"})
    return await common.stream_archive(request, job, [(_result_name(i), i) for i in done],
                                 f"{job.id}.zip")


@router.get("/images/{job_id}/{filename}", summary="One processed image",
            description="Compatibility route (image-api): the image_url of a finished task.",
            responses={200: {"content": {"image/jpeg": {}}}})
async def image(job_id: str, filename: str, request: Request) -> Response:
    job = await common.load_job(request, job_id, SOURCE)
    item = next((i for i in job.items if _result_name(i) == filename), None) if job else None
    if job is None or item is None or common.outcome(item) != Status.succeeded:
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    return await common.stream_result(request, job, item, filename, inline=True)
