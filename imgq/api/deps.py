"""Request-scoped access to the app's runtime."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import Depends, Request

from imgq.api.schemas import ErrorResponse
from imgq.dispatch.base import Dispatcher
from imgq.domain.access import Scope
from imgq.domain.models import Item, Job
from imgq.domain.status import Status
from imgq.errors import Gone, NotFound
from imgq.worker.runtime import Runtime


async def load_item(rt: Runtime, scope: Scope, job_id: str, index: int) -> tuple[Job, Item]:
    """A job's item by its index, refusing unknown items (404) and removed files (410)."""
    job = await anyio.to_thread.run_sync(lambda: rt.repo.get_job(job_id, scope=scope))
    item = next((i for i in job.items if i.idx == index), None)
    if item is None:
        raise NotFound(f"job {job_id} has no item {index}")
    if job.data_removed or item.status == Status.expired:
        raise Gone()
    return job, item


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def get_dispatcher(request: Request) -> Dispatcher | None:
    return request.app.state.dispatcher  # type: ignore[no-any-return]


def base_url(request: Request) -> str:
    configured = request.app.state.runtime.settings.public_url
    return (configured or str(request.base_url)).rstrip("/")


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
DispatcherDep = Annotated[Dispatcher | None, Depends(get_dispatcher)]
BaseUrl = Annotated[str, Depends(base_url)]


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI descriptions of the error responses a route may give."""
    text = {
        400: "The request is malformed (message says how).",
        404: "No such job or item.",
        408: "The request body paused too long or arrived too slowly.",
        409: "The job or item is not in a state that allows this.",
        410: "The job's files expired and were removed, or a result's file is gone "
             "(`result_missing`).",
        413: "Too many files, a file too large, an image with too many pixels, a pipeline "
             "that would make one, or form fields too large.",
        415: "A file is not an image in a supported format.",
        422: "The pipeline, a parameter or a query value is invalid (message names it).",
        429: "Too many such requests at once; try again after Retry-After seconds.",
        503: "The database or storage cannot be reached, or the disk is full; the code says "
             "which, Retry-After says when to try again.",
    }
    return {c: {"model": ErrorResponse, "description": text[c]} for c in codes}
