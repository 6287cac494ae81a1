"""The Image Queue Demo: one image per upload, integer task ids, a result page.

POST /upload (file) → {"task_id": int, "filename", "message"}; GET /status/{task_id} →
{"task_id", "filename", "status", "upload_time"} or 404 {"detail": "Task not found"};
GET /health; GET /upload (the upload form) and GET /result/{filename} (the result page).

The old system's ids were the rows of its own table, 1, 2, 3, ...: anyone could read anyone's task.
Here they are random integers below 2**53 (a JSON number holds them exactly), kept in the
compat_tasks table beside the ordinary imgq job they name. The processing is the pipeline in
IMGQ_COMPAT_QUEUE_DEMO_PIPELINE (by default: the picture as it is, upright, without metadata).
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote

import anyio
from fastapi import Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from imgq.api.auth import scope_of
from imgq.api.compat import common
from imgq.config import Settings, SettingsError
from imgq.domain.models import Job
from imgq.domain.pipeline import parse_pipeline
from imgq.domain.status import Status
from imgq.errors import ImgqError, InvalidRequest, NotFound
from imgq.ops.base import Registry

SOURCE = "compat:image-queue-demo"
SYSTEM = "queue_demo"  # the key of its rows in compat_tasks
TAG = "compat: Image Queue Demo"
#: imgq item state -> the old system's status word. It had no word for a failure (its worker left a
#: failed task "pending" for ever); imgq says "failed" rather than keep a client waiting.
STATUS_WORDS = {
    Status.queued: "pending",
    Status.running: "processing",
    Status.succeeded: "done",
    Status.failed: "failed",
    Status.cancelled: "failed",
}


def render_error(exc: ImgqError) -> tuple[int, Any]:
    return exc.status_code, {"detail": exc.message}


router = common.compat_router(TAG, render_error)
OPENAPI_TAG = common.tag_info(
    TAG, "Image Queue Demo (FastAPI + NATS JetStream)",
    "Upload one image in the field `file`, poll its integer task id, see it on the result page. "
    "Switch off with IMGQ_COMPAT_QUEUE_DEMO=false; the processing is IMGQ_COMPAT_QUEUE_DEMO_PIPELINE.")
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary"}}}}}}}


def check_settings(settings: Settings, registry: Registry) -> None:
    """Refuse to start with a processing pipeline that could never run."""
    try:
        registry.bind(parse_pipeline(settings.compat_queue_demo_pipeline))
    except ImgqError as exc:
        raise SettingsError(f"IMGQ_COMPAT_QUEUE_DEMO_PIPELINE: {exc.message}") from None


async def _free_task_id(request: Request) -> int:
    repo = common.runtime(request).repo
    while True:  # a clash is about one in 2**53 per task: this loop runs once
        task_id = common.new_task_row_id()
        if not await anyio.to_thread.run_sync(repo.compat_task_exists, SYSTEM, task_id):
            return task_id


def _status(job: Job) -> str:
    return STATUS_WORDS[common.outcome(job.items[0])]


@router.post("/upload", summary="Upload an image file",
             description="Compatibility route (Image Queue Demo). A browser's form post (Accept: "
             "text/html) is sent on to the result page.", openapi_extra=UPLOAD_BODY)
async def upload(request: Request) -> Response:
    rt = common.runtime(request)
    received = await common.receive(request, {"file"}, max_files=1)
    try:
        if not received.files:
            raise InvalidRequest("no file: send the image in the 'file' field")
        pipeline = [s.to_dict() for s in parse_pipeline(rt.settings.compat_queue_demo_pipeline)]
        task_id = await _free_task_id(request)
        filename = received.files[0].name
        job = await common.submit(request, received, pipeline, SOURCE,
                                  {"task_id": task_id, "filename": filename})
    finally:
        received.discard()
    await anyio.to_thread.run_sync(rt.repo.add_compat_task, task_id, SYSTEM, job.id, filename)
    if request.headers.get("accept", "").startswith("text/html"):
        return RedirectResponse(f"/result/{quote(filename)}", status_code=303)
    return JSONResponse({"task_id": task_id, "filename": filename,
                         "message": "Upload successful"})


async def _job_of(request: Request, task_id: int | None = None,
                  filename: str | None = None) -> Job | None:
    if filename is not None:
        return await common.job_by_filename(request, SYSTEM, SOURCE, filename)
    repo, scope = common.runtime(request).repo, scope_of(request)
    job_id = await anyio.to_thread.run_sync(
        lambda: repo.compat_task_job(SYSTEM, task_id, scope=scope))
    return None if job_id is None else await common.load_job(request, job_id, SOURCE)


@router.get("/status/{task_id}", summary="Status of an image processing task",
            description="Compatibility route (Image Queue Demo): pending, processing or done (and "
            "failed, which the old system lacked).",
            responses={404: {"description": '{"detail": "Task not found"}'}})
async def status(task_id: str, request: Request) -> dict[str, Any]:
    number = int(task_id) if task_id.isascii() and task_id.isdigit() and len(task_id) < 19 else None
    job = None if number is None else await _job_of(request, task_id=number)
    if job is None or not job.items:
        raise NotFound("Task not found")
    return {"task_id": number, "filename": job.extra.get("filename", job.items[0].input_name),
            "status": _status(job), "upload_time": common.iso(job.created_at)}


@router.get("/health", summary="Health check", description="Compatibility route (Image Queue Demo).")
async def health() -> dict[str, str]:
    return {"status": "ok"}


FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Upload an image</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto">
<h1>Upload an image</h1>
<form action="/upload" method="post" enctype="multipart/form-data">
  <input type="file" name="file" accept="image/*" required>
  <button type="submit">Upload</button>
</form>
<p>You will be taken to the result page, which shows the processed image when it is ready.</p>
</body></html>"""


@router.get("/upload", response_class=HTMLResponse, summary="The upload form",
            description="Compatibility route (Image Queue Demo): the old system's upload form.")
async def upload_form() -> str:
    return FORM


def _page(title: str, body: str, refresh: bool = False, status_code: int = 200) -> HTMLResponse:
    meta = '<meta http-equiv="refresh" content="2">' if refresh else ""
    return HTMLResponse(
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
        f"<title>{html.escape(title)}</title></head>"
        '<body style="font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto">'
        f'<h1>{html.escape(title)}</h1>{body}<p><a href="/upload">Upload another image</a></p>'
        "</body></html>", status_code=status_code)


@router.get("/result/{filename}", response_class=HTMLResponse, summary="The result page",
            description="Compatibility route (Image Queue Demo): the newest upload of this file name; "
            "it refreshes itself until the image is processed.")
async def result(filename: str, request: Request) -> HTMLResponse:
    job = await _job_of(request, filename=filename)
    if job is None or not job.items:
        return _page("Not found", f"<p>No uploaded image is called {html.escape(filename)}.</p>",
                     status_code=404)
    item, word = job.items[0], _status(job)
    title = f"{filename}: {word}"
    if word in ("pending", "processing"):
        return _page(title, "<p>The image is being processed; this page refreshes itself.</p>",
                     refresh=True)
    if word != "done":
        return _page(title, f"<p>{html.escape(item.error_message or 'Processing failed.')}</p>")
    if common.is_expired(job, item):
        return _page(title, "<p>The processed image has expired and was removed.</p>")
    src = f"/processed/{quote(filename)}"
    return _page(title, f'<p><img src="{src}" alt="{html.escape(filename)}, processed" '
                 'style="max-width: 100%"></p>'
                 f'<p><a href="{src}" download>Download</a></p>')
