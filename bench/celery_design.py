"""The design imgq replaces, for comparison: FastAPI + Celery + Redis + Pillow, written the way
the older systems (the FastAPI + Celery demo, the AI Upscaler's backend) were built.

One upload per request, saved to a folder; one Celery task per image (`process_image.delay`),
Celery's defaults otherwise (early acks, prefetch 4), the result kept in Redis; status through
`AsyncResult`; the result file served by path. Pillow does the work.

    uvicorn bench.celery_design:app          # the API
    celery -A bench.celery_design:celery_app worker     # the worker

Settings by environment: BENCH_CELERY_REDIS (broker and result backend), BENCH_CELERY_DIR
(upload and output folders), BENCH_CELERY_QUEUE (the queue name, unique per run).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from celery import Celery
from celery.result import AsyncResult
from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse
from PIL import Image, ImageFilter, ImageOps

REDIS = os.environ.get("BENCH_CELERY_REDIS", "redis://127.0.0.1:6379/0")
FOLDER = Path(os.environ.get("BENCH_CELERY_DIR", "/tmp/celery-design"))
QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "celery")
UPLOADS, OUTPUTS = FOLDER / "uploads", FOLDER / "outputs"

celery_app = Celery("celery_design", broker=REDIS, backend=REDIS)
celery_app.conf.update(task_default_queue=QUEUE, worker_hijack_root_logger=False)
app = FastAPI(title="FastAPI + Celery + Pillow")


def _apply(image: Image.Image, operation: str) -> Image.Image:
    if operation == "thumb100":
        return ImageOps.fit(image.convert("RGB"), (100, 100), Image.Resampling.LANCZOS)
    if operation == "blur":
        return image.convert("RGB").filter(ImageFilter.GaussianBlur(2))
    raise ValueError(f"unknown operation {operation}")


@celery_app.task(name="process_image")
def process_image(path: str, operation: str) -> dict[str, Any]:
    started = time.time()  # for the benchmark's timeline of the workers' use
    with Image.open(path) as image:
        out = _apply(ImageOps.exif_transpose(image), operation)
    target = OUTPUTS / (Path(path).stem + ".jpg")
    out.save(target, "JPEG", quality=85)
    return {"output": str(target), "width": out.width, "height": out.height,
            "started": started, "finished": time.time()}


@app.post("/process-image/")
async def submit(file: UploadFile = File(...), operation: str = Form(...)) -> dict[str, str]:
    UPLOADS.mkdir(parents=True, exist_ok=True)
    OUTPUTS.mkdir(parents=True, exist_ok=True)
    path = UPLOADS / f"{uuid.uuid4()}{Path(file.filename or 'x.jpg').suffix}"
    path.write_bytes(await file.read())
    task = process_image.delay(str(path), operation)
    return {"task_id": task.id}


@app.get("/task-status/{task_id}")
def status(task_id: str) -> dict[str, Any]:
    result = AsyncResult(task_id, app=celery_app)
    body: dict[str, Any] = {"task_id": task_id, "status": result.state}
    if result.successful():
        body["result"] = result.result
    elif result.failed():
        body["error"] = str(result.result)
    return body


@app.get("/result/{task_id}")
def download(task_id: str) -> FileResponse:
    result = AsyncResult(task_id, app=celery_app)
    if not result.successful():
        raise HTTPException(404, "not ready")
    return FileResponse(result.result["output"], media_type="image/jpeg")
