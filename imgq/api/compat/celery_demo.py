"""The FastAPI + Celery demo: grayscale or resize one image to 100×100.

POST /process-image/ (file, operation) → {"task_id", "message"}; GET /task-status/{task_id}
→ {"task_id", "status", "result"?}; GET /task-result/{task_id} → {"task_id",
"processed_image"}. The task id is the imgq job id. The result is the path
"processed/<name of the uploaded file>", as the old system's README shows; imgq serves that
path (GET /processed/<name>, module processed), so a client that joins it to the server's URL
downloads the image. The file name is recorded in compat_tasks for that lookup.
"""

from __future__ import annotations

from typing import Any

import anyio

from fastapi import Request

from imgq.api.compat import common
from imgq.domain.models import Job
from imgq.domain.status import Status
from imgq.errors import ImgqError, InvalidRequest, NotFound

SOURCE = "compat:celery-demo"
SYSTEM = "celery-demo"  # its rows in compat_tasks: the uploaded file name of each task
TAG = "compat: FastAPI + Celery demo"
PIPELINES: dict[str, list[dict[str, Any]]] = {
    "grayscale": [{"op": "grayscale"}],
    # Pillow's img.resize((100, 100)): exactly 100×100, stretched, enlarged if smaller.
    "resize": [{"op": "resize", "width": 100, "height": 100, "fit": "fill", "enlarge": True}],
}
#: imgq item state -> the Celery task state the old system reported.
STATUS_WORDS = {
    Status.queued: "PENDING",
    Status.running: "STARTED",
    Status.succeeded: "SUCCESS",
    Status.failed: "FAILURE",
    Status.cancelled: "FAILURE",
}


def render_error(exc: ImgqError) -> tuple[int, Any]:
    return exc.status_code, {"detail": exc.message}


router = common.compat_router(TAG, render_error)
OPENAPI_TAG = common.tag_info(
    TAG, "the FastAPI + Celery image processing demo",
    "Upload one image with operation grayscale or resize (to 100×100), poll the task, read "
    "the processed image's path. Switch off with IMGQ_COMPAT_CELERY_DEMO=false.")
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "operation"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "JPEG or PNG."},
        "operation": {"type": "string", "enum": list(PIPELINES)},
    }}}}}}


async def _task(request: Request, task_id: str) -> Job:
    job = await common.load_job(request, task_id, SOURCE)
    if job is None or not job.items:
        raise NotFound("Task not found")
    return job


def _processed_path(job: Job) -> str | None:
    item = job.items[0]
    if common.outcome(item) != Status.succeeded or not item.result_name:
        return None
    return f"processed/{item.input_name}"


@router.post("/process-image/", summary="Upload an image and start processing",
             description="Compatibility route (FastAPI + Celery demo).", openapi_extra=UPLOAD_BODY)
async def process_image(request: Request) -> dict[str, Any]:
    upload = await common.receive(request, {"file"}, max_files=1)
    try:
        operation = upload.fields.get("operation", "").strip().lower()
        if operation not in PIPELINES:
            raise InvalidRequest(f"Invalid operation {operation!r}: use grayscale or resize")
        if not upload.files:
            raise InvalidRequest("no image: send it in the 'file' field")
        job = await common.submit(request, upload, PIPELINES[operation], SOURCE,
                                  {"operation": operation})
    finally:
        upload.discard()
    repo = common.runtime(request).repo
    await anyio.to_thread.run_sync(repo.add_compat_task, common.new_task_row_id(), SYSTEM,
                                   job.id, job.items[0].input_name)
    return {"task_id": job.id, "message": "Image processing started"}


@router.get("/task-status/{task_id}", summary="Check task status",
            description="Compatibility route (FastAPI + Celery demo): PENDING, STARTED, SUCCESS or FAILURE; "
            "result (the processed image's path) once SUCCESS, error once FAILURE.")
async def task_status(task_id: str, request: Request) -> dict[str, Any]:
    job = await _task(request, task_id)
    item = job.items[0]
    state = common.outcome(item)
    body: dict[str, Any] = {"task_id": job.id, "status": STATUS_WORDS[state]}
    if state == Status.succeeded:
        body["result"] = _processed_path(job)
    elif STATUS_WORDS[state] == "FAILURE":
        body["error"] = item.error_message
    return body


@router.get("/task-result/{task_id}", summary="Retrieve the processed image's path",
            description="Compatibility route (FastAPI + Celery demo): processed_image is null until the "
            "task succeeded, as Celery's result is.")
async def task_result(task_id: str, request: Request) -> dict[str, Any]:
    job = await _task(request, task_id)
    return {"task_id": job.id, "processed_image": _processed_path(job)}
