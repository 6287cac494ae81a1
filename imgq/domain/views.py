"""What a job looks like from outside: the JSON of GET /v1/jobs/{id}, of its live events and
of its webhook. One definition, so that the three never differ."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from pydantic_core import to_json

from imgq.domain.models import Item, Job
from imgq.domain.status import JobStatus, Status


class ErrorInfo(BaseModel):
    code: str = Field(description="Stable machine-readable error code, e.g. decode_error.")
    message: str = Field(description="What went wrong, safe to show to a person.")
    details: dict[str, Any] | None = Field(default=None, description="Extra facts, if any.")


class Timings(BaseModel):
    queued_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    processing_seconds: float | None = Field(None, description="Time spent processing.")


class ImageMeta(BaseModel):
    format: str
    width: int
    height: int
    bytes: int


class ItemOut(BaseModel):
    id: str
    index: int = Field(description="Position in the job; used in the result URL.")
    name: str = Field(description="The uploaded file's name, cleaned.")
    status: Status
    progress: int = Field(ge=0, le=100)
    stage: str | None = Field(None, description='What is happening now, e.g. "tile 12/48".')
    attempts: int
    error: ErrorInfo | None = None
    timings: Timings
    input: ImageMeta | None = Field(None, description="The uploaded image; null for an item "
                                    "whose first step makes its image (generate).")
    output: ImageMeta | None = None
    details: dict[str, Any] | None = Field(
        None, description="What the steps report about the result, e.g. generate's model, "
        "seed, steps and prompt_used.")
    result_name: str | None = Field(None, description="Download name of the result.")
    result_url: str | None = None
    estimated_seconds: float | None = Field(
        None, description="Estimated processing seconds of the AI steps, made when the job "
        "was submitted from the model costs measured on this server (not counting the wait in "
        "the queue); null for pipelines without AI steps.")


class JobUrls(BaseModel):
    self: str
    archive: str
    cancel: str


class JobOut(BaseModel):
    id: str
    status: JobStatus = Field(description="Derived from the items; partial = some failed.")
    progress: int = Field(ge=0, le=100)
    created_at: datetime
    expires_at: datetime
    data_removed: bool = Field(description="True once the files expired and were removed.")
    cancel_requested: bool
    pipeline: list[dict[str, Any]]
    resource: str = Field(description="cpu or gpu: the queue the items go to.")
    counts: dict[str, int] = Field(description="Items per status.")
    items: list[ItemOut]
    urls: JobUrls


def _meta(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    if not raw or "format" not in raw:  # no input image: its first step made it
        return None
    return {"format": raw["format"], "width": raw["width"], "height": raw["height"],
            "bytes": raw["bytes"]}


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)


_ERROR_SHOWN = frozenset((Status.failed, Status.cancelled, Status.queued))


def _item_fields(url: str, item: Item) -> dict[str, Any]:
    """An item as ItemOut shows it, in plain values (`url`: its job's)."""
    status = item.status
    error = None
    if item.error_code and status in _ERROR_SHOWN:
        error = {"code": item.error_code, "message": item.error_message or "", "details": None}
    result_meta, input_meta = item.result_meta, item.input_meta
    return {
        "id": item.id, "index": item.idx, "name": item.input_name, "status": status.value,
        "progress": 100 if status == Status.succeeded else item.progress, "stage": item.stage,
        "attempts": item.attempts, "error": error,
        "timings": {"queued_at": item.queued_at, "started_at": item.started_at,
                    "finished_at": item.finished_at,
                    "processing_seconds": _seconds(item.processing_seconds)},
        "input": _meta(input_meta), "output": _meta(result_meta),
        "details": (result_meta or {}).get("details") or None,
        "result_name": item.result_name,
        "result_url": (f"{url}/items/{item.idx}/result"
                       if status == Status.succeeded and item.result_key else None),
        "estimated_seconds": _seconds((input_meta or {}).get("estimated_seconds")),
    }


def _job_fields(job: Job, base: str) -> dict[str, Any]:
    """A job as JobOut shows it, in plain values."""
    url = f"{base}/v1/jobs/{job.id}"
    counts: dict[str, int] = {}
    for item in job.items:
        counts[item.status.value] = counts.get(item.status.value, 0) + 1
    return {
        "id": job.id, "status": job.status.value, "progress": job.progress,
        "created_at": job.created_at, "expires_at": job.expires_at,
        "data_removed": job.data_removed, "cancel_requested": job.cancel_requested,
        "pipeline": job.pipeline, "resource": job.resource, "counts": counts,
        "items": [_item_fields(url, i) for i in job.items],
        "urls": {"self": url, "archive": f"{url}/archive", "cancel": f"{url}/cancel"},
    }


def item_out(job: Job, item: Item, base: str) -> ItemOut:
    return ItemOut.model_validate(_item_fields(f"{base}/v1/jobs/{job.id}", item))


def job_out(job: Job, base: str) -> JobOut:
    return JobOut.model_validate(_job_fields(job, base))


def job_json(job: Job, base: str) -> bytes:
    """`job_out(job, base).model_dump_json()`, the same bytes, made without the models: a
    status read renders its answer straight from the job's plain values (no model validated
    per item), with the serializer pydantic uses for the models' values."""
    return to_json(_job_fields(job, base))
