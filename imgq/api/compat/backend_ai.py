"""Backend AI (Django REST + Celery): AI tasks with a prompt, an image, parameters.

POST /api/v1/tasks/create/ → 201 {"task_id", "status": "PENDING", "message", "created_at"} or
400 {"error": "Invalid input", "details": {field: [messages]}}; GET .../{task_id}/status/,
GET .../{task_id}/result/ (400 until SUCCESS), POST .../{task_id}/cancel/; an unknown id
answers 404 {"error": "Task not found"}. The task id is the imgq job id.

Each task type runs an imgq operation: image_enhancement → upscale, background_removal →
remove_background, style_transfer → style_transfer (shipped models), image_generation →
generate (a checkpoint the operator installs) and face_swap → face_swap (InsightFace models the
operator installs). image_generation takes no image: its job is one item with no input.
style_transfer may take a `style_image` file and face_swap needs the face to put in as
`source_image`; both become the job's attachments. An operation that is not installed is
refused when the task is created, with what is missing and how to add it; there is never a
mock result.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse

from imgq.api.compat import common
from imgq.api.deps import base_url
from imgq.api.service import ATTACHMENTS
from imgq.api.uploads import Upload, UploadLimits, read_body
from imgq.domain.models import Item, Job
from imgq.domain.pipeline import MAX_DEPTH, load_json
from imgq.domain.status import Status
from imgq.errors import (
    DecodeError,
    FileTooLarge,
    ImageTooLarge,
    ImgqError,
    InvalidPipeline,
    NotFound,
    TooManyFiles,
    UnsupportedFormat,
)

SOURCE = "compat:backend-ai"
TAG = "compat: Backend AI"
PREFIX = "/api/v1/tasks"
MAX_PROMPT = 5000
#: task type -> the imgq operation that does it.
OPERATIONS = {
    "image_generation": "generate",
    "face_swap": "face_swap",
    "background_removal": "remove_background",
    "style_transfer": "style_transfer",
    "image_enhancement": "upscale",
}
SHIPPED = frozenset({"upscale", "remove_background", "style_transfer"})
#: operations imgq has, run with model files the operator installs (docs/ai.md)
OPERATOR_MODELS = frozenset({"generate", "face_swap"})
NEEDS_IMAGE = frozenset(OPERATIONS) - {"image_generation"}
MAX_FORM_BYTES = 256 * 1024  # a JSON or url-encoded body (no image)
#: extra image fields -> the step parameter that names them (as job attachments)
ATTACHED = {"style_image": "style_image", "source_image": "source_face"}
#: task types that cannot run without one of those fields
NEEDS_ATTACHED = {"face_swap": "source_image"}
#: the seed's parameter names -> generate's
GENERATE_NAMES = {"num_inference_steps": "steps", "guidance_scale": "guidance"}
IMAGE_ERRORS = (DecodeError, FileTooLarge, ImageTooLarge, TooManyFiles, UnsupportedFormat)


class ShapedError(ImgqError):
    """An answer in the old system's own shape."""

    def __init__(self, status_code: int, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("error", "")))
        self.status_code = status_code
        self.body = body


def invalid(details: dict[str, list[str]]) -> ShapedError:
    return ShapedError(400, {"error": "Invalid input", "details": details})


def render_error(exc: ImgqError) -> tuple[int, Any]:
    if isinstance(exc, ShapedError):
        return exc.status_code, exc.body
    if isinstance(exc, NotFound):
        return 404, {"error": "Task not found"}
    if exc.status_code >= 500:
        return exc.status_code, {"error": exc.message}
    field = ("image" if isinstance(exc, IMAGE_ERRORS)
             else "parameters" if isinstance(exc, InvalidPipeline) else "non_field_errors")
    return 400, {"error": "Invalid input", "details": {field: [exc.message]}}


router = common.compat_router(TAG, render_error)
OPENAPI_TAG = common.tag_info(
    TAG, "Backend AI (Django REST + Celery)",
    "Create an AI task (image_enhancement, background_removal, style_transfer; image_generation "
    "and face_swap with models the operator installs), poll its status, read its result, "
    "cancel it. Switch off with IMGQ_COMPAT_BACKEND_AI=false.")
CREATE_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["prompt", "task_type"],
    "properties": {
        "prompt": {"type": "string", "maxLength": MAX_PROMPT},
        "task_type": {"type": "string", "enum": list(OPERATIONS)},
        "image": {"type": "string", "format": "binary"},
        "style_image": {"type": "string", "format": "binary",
                        "description": "style_transfer: a picture whose style to use"},
        "source_image": {"type": "string", "format": "binary",
                         "description": "face_swap (required there): the picture whose face "
                                        "is put into `image`"},
        "parameters": {"type": "string", "description": 'JSON object, e.g. {"scale": 4}'},
    }}}}}}


# -- statuses ---------------------------------------------------------------------------------
def status_word(item: Item) -> str:
    """imgq item state -> the old system's status; a queued item that already ran is a RETRY."""
    state = common.outcome(item)
    if state == Status.queued:
        return "RETRY" if item.attempts else "PENDING"
    return {Status.running: "PROCESSING", Status.succeeded: "SUCCESS"}.get(state, "FAILURE")


def _error_message(item: Item) -> str | None:
    if common.outcome(item) == Status.cancelled:
        return "Cancelled by user"
    if status_word(item) in ("FAILURE", "RETRY"):
        return item.error_message
    return None


# -- create -----------------------------------------------------------------------------------
def _check_fields(fields: dict[str, str], has_image: bool) -> tuple[str, str, dict[str, Any]]:
    errors: dict[str, list[str]] = {}
    prompt = fields.get("prompt")
    if prompt is None:
        errors["prompt"] = ["This field is required."]
    elif not prompt.strip():
        errors["prompt"] = ["This field may not be blank."]
    elif len(prompt) > MAX_PROMPT:
        errors["prompt"] = [f"Ensure this field has no more than {MAX_PROMPT} characters."]
    task_type = fields.get("task_type")
    if task_type is None:
        errors["task_type"] = ["This field is required."]
    elif task_type not in OPERATIONS:
        errors["task_type"] = [f'"{task_type}" is not a valid choice.']
    elif task_type in NEEDS_IMAGE and not has_image:
        errors["image"] = [f"{task_type} needs an image."]
    parameters: Any = {}
    if fields.get("parameters", "").strip():
        try:
            parameters = load_json(fields["parameters"])
        except json.JSONDecodeError:
            errors["parameters"] = ["Value must be valid JSON."]
        except ValueError as exc:  # nested too deeply
            errors["parameters"] = [f"Value {exc}."]
        if not isinstance(parameters, dict):
            errors.setdefault("parameters", ["Must be a JSON object."])
    if errors:
        raise invalid(errors)
    return prompt or "", task_type or "", parameters


def _missing_model(task_type: str, operation: str, reason: str) -> ShapedError:
    if operation in SHIPPED:
        fix = (f"imgq ships the model of '{operation}', but its AI operations are not "
               "installed here: install imgq's AI dependencies (see the README) and restart")
        return ShapedError(503, {"error": "Model not installed", "details": {
            "task_type": task_type, "operation": operation, "reason": reason, "how_to_fix": fix}})
    if operation in OPERATOR_MODELS:
        fix = (f"imgq runs {task_type} with model files the server's operator installs: "
               f"{reason}. docs/ai.md says which files and where; "
               "GET /v1/operations lists what is installed")
        return ShapedError(400, {"error": "Model not installed", "details": {
            "task_type": task_type, "operation": operation, "reason": reason, "how_to_fix": fix}})
    fix = (f"imgq ships no model for {task_type}. Install a plug-in package that provides the "
           f"operation '{operation}' through the 'imgq.operations' entry point (it may load its "
           "weights from IMGQ_AI_MODELS_DIR), then restart imgq (docs/ai.md); GET "
           "/v1/operations lists what is installed")
    return ShapedError(400, {"error": "Model not installed", "details": {
        "task_type": task_type, "operation": operation, "reason": reason, "how_to_fix": fix}})


def _step(request: Request, operation: str, prompt: str, parameters: dict[str, Any],
          attached: list[str]) -> dict[str, Any]:
    """The operation's step: the parameters it knows (the old system ignored the others)."""
    known = common.runtime(request).registry.get(operation).params_model.model_fields
    given = dict(parameters)
    if operation == "remove_background" and given.pop("return_mask", False):
        given.setdefault("mode", "mask")
    if operation == "generate":
        given = {GENERATE_NAMES.get(k, k): v for k, v in given.items()}
    step = {k: v for k, v in given.items() if k in known}
    if "prompt" in known:
        step["prompt"] = prompt
    for name in attached:
        if ATTACHED[name] in known:
            step[ATTACHED[name]] = name
    return {"op": operation, **step}


def _sort_files(upload: Upload, task_type: str) -> list[str]:
    """The seed's `image` is the item; style_image and source_image become attachments named
    by their field. image_generation makes its image, so an image sent with it is not used."""
    attached = []
    for staged in upload.files:
        if staged.field in ATTACHED:
            attached.append(staged.field)
            staged.field, staged.name = ATTACHMENTS, staged.field
    if task_type == "image_generation":
        unused = [f for f in upload.files if f.field != ATTACHMENTS]
        for staged in unused:
            staged.path.unlink(missing_ok=True)
            upload.files.remove(staged)
    return attached


async def _receive(request: Request) -> Upload:
    """Multipart as the old system documents; like Django REST, JSON and plain forms too (then
    without an image)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/json", "application/x-www-form-urlencoded"):
        return await common.receive(request, {"image", *ATTACHED}, max_files=1 + len(ATTACHED))
    body = bytearray()
    limits = UploadLimits.from_settings(common.runtime(request).settings)
    async for chunk in read_body(request, limits):  # 408 for a body that stalls
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise invalid({"non_field_errors": [f"the body is over {MAX_FORM_BYTES} bytes"]})
    if kind == "application/x-www-form-urlencoded":
        text = body.decode("utf-8", "replace")
        return Upload(dict(parse_qsl(text, keep_blank_values=True)))
    try:
        data = load_json(body.decode("utf-8", "replace") or "{}", MAX_DEPTH + 1)
    except json.JSONDecodeError:
        raise invalid({"non_field_errors": ["the body is not valid JSON"]}) from None
    except ValueError as exc:
        raise invalid({"non_field_errors": [f"the body {exc}"]}) from None
    if not isinstance(data, dict):
        raise invalid({"non_field_errors": ["the body must be a JSON object"]})
    return Upload({k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()})


@router.post(f"{PREFIX}/create/", status_code=201, summary="Create an AI task",
             description="Compatibility route (Backend AI).", openapi_extra=CREATE_BODY)
async def create_task(request: Request) -> JSONResponse:
    upload = await _receive(request)
    try:
        has_image = any(f.field not in ATTACHED for f in upload.files)
        prompt, task_type, parameters = _check_fields(upload.fields, has_image)
        operation = OPERATIONS[task_type]
        problem = common.operation_problem(common.runtime(request), operation)
        if problem:
            raise _missing_model(task_type, operation, problem)
        needed = NEEDS_ATTACHED.get(task_type)
        if needed and not any(f.field == needed for f in upload.files):
            raise invalid({needed: [f"{task_type} needs a {needed}: the picture whose face "
                                    "is put into image."]})
        attached = _sort_files(upload, task_type)
        pipeline = [_step(request, operation, prompt, parameters, attached),
                    {"op": "encode", "format": "png"}]
        job = await common.submit(request, upload, pipeline, SOURCE, {
            "task_type": task_type, "prompt": prompt, "parameters": parameters})
    finally:
        upload.discard()
    return JSONResponse({"task_id": job.id, "status": "PENDING",
                         "message": "Task queued successfully",
                         "created_at": common.iso(job.created_at)}, status_code=201)


# -- status, result, cancel -------------------------------------------------------------------
async def _task(request: Request, task_id: str) -> Job:
    job = await common.load_job(request, task_id, SOURCE)
    if job is None or not job.items:
        raise NotFound()
    return job


def _image_url(request: Request, job: Job, item: Item) -> str:
    return f"{base_url(request)}/v1/jobs/{job.id}/items/{item.idx}/result"


@router.get(PREFIX + "/{task_id}/status/", summary="Task status",
            description="Compatibility route (Backend AI): PENDING, PROCESSING, SUCCESS, FAILURE "
            "or RETRY, with progress (0–100), the stage message and the timings.")
async def task_status(task_id: str, request: Request) -> dict[str, Any]:
    job = await _task(request, task_id)
    item = job.items[0]
    word = status_word(item)
    body: dict[str, Any] = {
        "task_id": job.id, "id": job.id, "task_type": job.extra.get("task_type"),
        "status": word, "progress": 100 if word == "SUCCESS" else item.progress,
        "message": item.stage, "created_at": common.iso(job.created_at),
        "started_at": common.iso(item.started_at), "completed_at": common.iso(item.finished_at),
        "updated_at": common.iso(item.finished_at or item.started_at or job.created_at),
        "processing_time": item.processing_seconds, "error_message": _error_message(item),
    }
    if word == "SUCCESS":
        body["result_url"] = f"{PREFIX}/{job.id}/result/"
    elif word == "FAILURE":
        body["error"] = body["error_message"]
        body["failed_at"] = body["completed_at"]
    return body


@router.get(PREFIX + "/{task_id}/result/", summary="Task result",
            description="Compatibility route (Backend AI): 400 until the task succeeded; then "
            "image_url (the result image), result_data and processing_time.")
async def task_result(task_id: str, request: Request) -> dict[str, Any]:
    job = await _task(request, task_id)
    item = job.items[0]
    word = status_word(item)
    if word != "SUCCESS":
        raise ShapedError(400, {"error": f"Task not completed. Status: {word}"})
    image_url = _image_url(request, job, item)
    details = dict((item.result_meta or {}).get("details") or {})
    prompt_used = details.pop("prompt_used", job.extra.get("prompt"))
    # generate reports model, seed, steps (the seed's metadata) and more
    metadata = {**details, "operation": job.pipeline[0].get("op"), "pipeline": job.pipeline,
                "output": {k: v for k, v in (item.result_meta or {}).items() if k != "details"}}
    result_data = {"image_url": image_url, "prompt_used": prompt_used,
                   "processing_details": f"{job.extra.get('task_type')} completed",
                   "metadata": metadata}
    return {
        "task_id": job.id, "id": job.id, "task_type": job.extra.get("task_type"),
        "status": word, "prompt": job.extra.get("prompt"), "image_url": image_url,
        "result_data": result_data, "processing_time": item.processing_seconds,
        "completed_at": common.iso(item.finished_at),
        "result": {"image_url": image_url, "prompt_used": prompt_used,
                   "processing_time": item.processing_seconds, "metadata": metadata},
    }


@router.post(PREFIX + "/{task_id}/cancel/", summary="Cancel a task",
             description="Compatibility route (Backend AI): a queued task never runs; a running "
             "one stops at its next step.")
async def cancel_task(task_id: str, request: Request) -> dict[str, str]:
    job = await _task(request, task_id)
    if status_word(job.items[0]) in ("SUCCESS", "FAILURE"):
        raise ShapedError(400, {"error": "Task already completed"})
    await common.cancel_job(request, job.id)
    return {"message": "Task cancelled"}
