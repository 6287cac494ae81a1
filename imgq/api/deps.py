"""Request-scoped access to the app's runtime."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import Depends, Request

from imgq.api.schemas import ErrorResponse
from imgq.dispatch.base import Dispatcher
from imgq.domain.access import Scope
from imgq.domain.models import Item
from imgq.domain.status import Status
from imgq.errors import Gone, NotFound
from imgq.worker.runtime import Runtime

#: Item indexes fit a 32-bit column: larger ones name no item.
MAX_ITEM_INDEX = 2**31


async def load_item(rt: Runtime, scope: Scope, job_id: str, index: int) -> Item:
    """A job's item by its index, refusing unknown items (404) and removed files (410)."""
    return await anyio.to_thread.run_sync(find_item, rt, scope, job_id, index)


def find_item(rt: Runtime, scope: Scope, job_id: str, index: int) -> Item:
    """`load_item` in the calling thread, for a route that does more in the same hand-off."""
    if not 0 <= index < MAX_ITEM_INDEX:  # no job has it, and the database could not compare it
        raise NotFound(f"job {job_id} has no item {index}")
    return _present(job_id, index, *rt.repo.get_job_item(job_id, index, scope=scope))


def find_item_at_once(rt: Runtime, scope: Scope, job_id: str, index: int) -> Item | None:
    """`find_item` on the event loop's thread where the repository reads without waiting
    (`Repository.polls_at_once`); None when the database is locked: `load_item` then."""
    if not 0 <= index < MAX_ITEM_INDEX:
        raise NotFound(f"job {job_id} has no item {index}")
    found = rt.repo.poll_job_item(job_id, index, scope=scope)
    return None if found is None else _present(job_id, index, *found)


async def find_item_on_loop(rt: Runtime, scope: Scope, job_id: str, index: int) -> Item:
    """`find_item` on the event loop where the repository reads there
    (`Repository.polls_on_loop`)."""
    if not 0 <= index < MAX_ITEM_INDEX:
        raise NotFound(f"job {job_id} has no item {index}")
    return _present(job_id, index,
                    *await rt.repo.poll_job_item_on_loop(job_id, index, scope=scope))


def _present(job_id: str, index: int, removed: bool, item: Item | None) -> Item:
    """The item, refusing unknown items (404) and removed files (410)."""
    if item is None:
        raise NotFound(f"job {job_id} has no item {index}")
    if removed or item.status == Status.expired:
        raise Gone()
    return item


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def get_dispatcher(request: Request) -> Dispatcher | None:
    return request.app.state.dispatcher  # type: ignore[no-any-return]


def base_url(request: Request) -> str:
    configured = request.app.state.runtime.settings.public_url
    return (configured or str(request.base_url)).rstrip("/")


# FastAPI runs a plain `def` dependency in a worker thread: these read the request in the
# event loop instead (no thread hand-off per dependency per request).
async def _runtime(request: Request) -> Runtime:
    return get_runtime(request)


async def _dispatcher(request: Request) -> Dispatcher | None:
    return get_dispatcher(request)


async def _base_url(request: Request) -> str:
    return base_url(request)


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
DispatcherDep = Annotated[Dispatcher | None, Depends(_dispatcher)]
BaseUrl = Annotated[str, Depends(_base_url)]


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
