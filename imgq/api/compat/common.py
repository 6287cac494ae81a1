"""What the compatibility APIs share: routers whose errors take each earlier system's shape,
uploads, submission as ordinary imgq jobs, and result downloads."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine, Iterable
from datetime import datetime, timezone
from functools import partial
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute

from imgq.api.archive import open_result, require_results, stream_zip
from imgq.api.auth import principal_of, scope_of
from imgq.api.capacity import refuse_when_full
from imgq.api.failures import public_error
from imgq.api.service import submit_job
from imgq.api.uploads import Upload, UploadLimits, receive_upload
from imgq.dispatch.base import Dispatcher
from imgq.domain.models import Item, Job
from imgq.domain.names import content_disposition
from imgq.domain.status import Status
from imgq.errors import Gone, ImgqError, InvalidRequest
from imgq.ops.image import INPUT_FORMATS, OUTPUT_FORMATS
from imgq.worker.runtime import Runtime

TASK_ID_MAX = 2**53 - 1
TASK_ID_MIN = 2**32  # well clear of the Image Queue Demo's own small sequential ids

#: Turns an error into (HTTP status, body) in one earlier system's shape.
ErrorRenderer = Callable[[ImgqError], tuple[int, Any]]


def compat_router(tag: str, render: ErrorRenderer) -> APIRouter:
    """A router whose routes answer every imgq error in the earlier system's own shape."""

    class CompatRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def answer(request: Request) -> Response:
                try:
                    return await handler(request)
                except RequestValidationError as exc:
                    status, body = render(InvalidRequest(_validation_message(exc)))
                    return JSONResponse(body, status_code=422 if status == 400 else status)
                except Exception as exc:
                    public = public_error(exc)  # imgq's errors; the database, storage: 503
                    if public is None:
                        raise
                    status, body = render(public)
                    return JSONResponse(body, status_code=status, headers=public.headers())

            return answer

    return APIRouter(tags=[tag], route_class=CompatRoute)


def _validation_message(exc: RequestValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def tag_info(name: str, system: str, description: str) -> dict[str, str]:
    return {"name": name, "description": f"**Compatibility API** of {system}, an earlier system "
            f"imgq replaces: programs written for it work unchanged. {description} Every job it "
            "creates is an ordinary imgq job, visible in /v1/jobs too."}


# -- uploads and submission -------------------------------------------------------------------
def runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def dispatcher(request: Request) -> Dispatcher | None:
    return request.app.state.dispatcher  # type: ignore[no-any-return]


async def receive(request: Request, fields: Iterable[str], max_files: int | None = None) -> Upload:
    """The multipart body, streamed to staging with imgq's limits (files, bytes per file)."""
    rt = runtime(request)
    limits = UploadLimits.from_settings(rt.settings, max_files, frozenset(fields))
    return await receive_upload(request, rt.blobs.staging_dir(), limits,
                                first=partial(refuse_when_full, rt))


async def submit(request: Request, upload: Upload, pipeline: list[dict[str, Any]], source: str,
                 extra: dict[str, Any]) -> Job:
    rt = runtime(request)
    return await submit_job(rt, dispatcher(request), principal_of(request), upload, pipeline, rt.settings.ttl_seconds,
                            source=source, extra=extra)


async def load_job(request: Request, job_id: str, source: str) -> Job | None:
    """A job made through one compatibility API and open to the caller; None for any other."""
    rt, scope = runtime(request), scope_of(request)
    found = await anyio.to_thread.run_sync(lambda: rt.repo.get_jobs([job_id], scope=scope))
    return found[0] if found and found[0].source == source else None


async def load_jobs(request: Request, job_ids: list[str] | None, recent: int = 0) -> list[Job]:
    """The caller's jobs: those of `job_ids` it may open, or its `recent` newest ones."""
    rt, scope = runtime(request), scope_of(request)
    if job_ids is not None:
        return await anyio.to_thread.run_sync(lambda: rt.repo.get_jobs(job_ids, scope=scope))
    found, _ = await anyio.to_thread.run_sync(lambda: rt.repo.list_jobs(recent, 0, scope=scope))
    return found


async def cancel_job(request: Request, job_id: str) -> Job:
    rt, scope = runtime(request), scope_of(request)
    return await anyio.to_thread.run_sync(lambda: rt.repo.cancel_job(job_id, scope=scope))


async def job_by_filename(request: Request, system: str, source: str,
                          filename: str) -> Job | None:
    """The newest job of an older API whose upload had this file name (see compat_tasks)."""
    repo, scope = runtime(request).repo, scope_of(request)
    job_id = await anyio.to_thread.run_sync(
        lambda: repo.compat_task_job(system, filename=filename, scope=scope))
    return None if job_id is None else await load_job(request, job_id, source)


def new_task_row_id() -> int:
    """A random id below 2**53 (a JSON number holds it exactly) for a compat_tasks row."""
    return TASK_ID_MIN + secrets.randbelow(TASK_ID_MAX - TASK_ID_MIN + 1)


def operation_problem(rt: Runtime, name: str) -> str | None:
    """Why the operation cannot run on this server, or None when it can."""
    if name not in rt.registry:
        return f"the '{name}' operation is not installed on this server"
    return rt.registry.get(name).unavailable_reason


# -- statuses and times -----------------------------------------------------------------------
def outcome(item: Item) -> Status:
    """The item's state, and for an expired item the state it finished in before its files
    were removed (the earlier systems have no word for expired)."""
    if item.status != Status.expired:
        return item.status
    if item.result_name:
        return Status.succeeded
    return Status.cancelled if item.error_code == "cancelled" else Status.failed


def is_expired(job: Job, item: Item | None = None) -> bool:
    return job.data_removed or (item is not None and item.status == Status.expired)


def iso(when: datetime | None) -> str | None:
    """UTC in the form the earlier systems show: 2025-10-27T10:30:00Z."""
    if when is None:
        return None
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


# -- downloads --------------------------------------------------------------------------------
async def stream_result(request: Request, job: Job, item: Item, name: str,
                        inline: bool = False) -> StreamingResponse:
    """The item's result file; the caller has checked that the item succeeded."""
    rt = runtime(request)
    if is_expired(job, item) or not item.result_key:
        raise Gone()
    fmt = (item.result_meta or {}).get("format", "png")
    media = OUTPUT_FORMATS.get(fmt, ("application/octet-stream", ""))[0]
    size, chunks = await open_result(rt.blobs, item)
    headers = {**content_disposition(name, inline), "Content-Length": str(size)}
    return StreamingResponse(chunks, media_type=media, headers=headers)


async def stream_archive(request: Request, job: Job, entries: list[tuple[str, Item]],
                   name: str) -> StreamingResponse:
    """A ZIP of (archive name, succeeded item) pairs, streamed as it is written."""
    rt = runtime(request)
    await require_results(rt.blobs, [i for _, i in entries])
    rows = [(n, i.result_key or "", i.finished_at or job.created_at) for n, i in entries]
    return StreamingResponse(stream_zip(rt.blobs, rows), media_type="application/zip",
                             headers=content_disposition(name))


async def stream_input(request: Request, job: Job, item: Item, inline: bool = True
                       ) -> StreamingResponse:
    """The file the client uploaded, under its own name, while the job keeps its files."""
    rt = runtime(request)
    if is_expired(job, item):
        raise Gone()
    fmt = str(item.input_meta.get("format", ""))
    media = INPUT_FORMATS.get(fmt, ("", "application/octet-stream", ""))[1]
    try:
        size = await anyio.to_thread.run_sync(rt.blobs.size, item.input_key)
    except KeyError:
        raise Gone() from None
    headers = {**content_disposition(item.input_name, inline), "Content-Length": str(size)}
    return StreamingResponse(rt.blobs.iter_bytes(item.input_key), media_type=media,
                             headers=headers)

