"""/v1/jobs: submit, inspect, download, cancel, delete."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from imgq.api.archive import (
    WholeResult,
    read_result,
    require_results,
    result_at_once,
    stream_zip,
)
from imgq.api.auth import ScopeDep, principal_of, scope_of
from imgq.api.capacity import refuse_when_full
from imgq.api.deps import (
    BaseUrl,
    RuntimeDep,
    base_url,
    errors,
    find_item,
    find_item_at_once,
    find_item_on_loop,
    get_dispatcher,
    get_runtime,
)
from imgq.api.job_reads import JobReads, etag_of, matches
from imgq.api.schemas import JobList, JobOut, job_out
from imgq.api.service import parse_ttl, publish, rows_on_loop, store_job, store_rows
from imgq.api.uploads import Upload, UploadLimits, receive_and
from imgq.domain.access import Scope
from imgq.domain.views import job_json
from imgq.domain.models import Item, Job
from imgq.domain.names import content_disposition, unique_names
from imgq.domain.status import Status
from imgq.errors import Conflict, Gone, InvalidRequest
from imgq.ops.image import OUTPUT_FORMATS
from imgq.worker.runtime import Runtime

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
MAX_OFFSET = 1_000_000_000

SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["files", "pipeline"],
            "properties": {
                "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                          "description": "One or more images (JPEG, PNG, WebP, GIF, TIFF, "
                          "HEIF, AVIF); the format is read from the bytes."},
                "pipeline": {"type": "string", "description":
                             'A JSON list of steps, e.g. [{"op": "resize", "width": 800}, '
                             '{"op": "encode", "format": "webp"}], or the compact form '
                             "resize:width=800|encode:format=webp. See GET /v1/operations."},
                "ttl_seconds": {"type": "integer", "description":
                                "How long the results are kept (default IMGQ_TTL_SECONDS)."},
                "callback_url": {"type": "string", "format": "uri", "description":
                                 "Webhook: when the job finishes, imgq POSTs the job (as GET "
                                 "/v1/jobs/{id} shows it) here, signed in the Imgq-Signature "
                                 "header; retried with backoff. Signed with the API key's "
                                 "secret (its hex SHA-256) when submitted with a key, else "
                                 "with IMGQ_WEBHOOK_SECRET, which must then be set."},
            },
        }}},
    }
}


@router.post(
    "", status_code=201, response_model=JobOut, openapi_extra=SUBMIT_BODY,
    summary="Submit images and a pipeline",
    responses=errors(400, 408, 413, 415, 422, 503),
    description="Answers at once with the job and its items, all queued. Uploads are streamed "
    "to storage; every limit is checked before anything is stored. `Location` points at the job.",
)
async def create_job(request: Request) -> Response:
    # What the request holds is read here rather than as dependencies (a resolution each).
    rt, dispatcher, base = get_runtime(request), get_dispatcher(request), base_url(request)
    caller, s = principal_of(request), rt.settings

    def store(upload: Upload) -> tuple[Job, bool]:
        pipeline = upload.fields.get("pipeline")
        if pipeline is None:
            raise InvalidRequest("missing the 'pipeline' field; see GET /v1/operations")
        ttl = parse_ttl(rt, upload.fields.get("ttl_seconds"))
        callback = upload.fields.get("callback_url")
        later = rows_on_loop(rt, caller, callback)
        return store_job(rt, caller, upload, pipeline, ttl, callback_url=callback,
                         base_url=base, rows=not later), later

    # The free space checked, the body parsed and staged, the files checked and stored: one
    # hand-off to a thread for a small upload; the rows on PostgreSQL back on the event loop.
    job, later = await receive_and(request, rt.blobs.staging_dir(),
                                   UploadLimits.from_settings(s), store, discard=True,
                                   first=partial(refuse_when_full, rt))
    if later:
        await store_rows(rt, job)
    publish(dispatcher, job)
    # JobOut's bytes made without the models (as a status read makes them): FastAPI would
    # validate the returned model against response_model, and then serialise it.
    return Response(job_json(job, base), status_code=201, media_type="application/json",
                    headers={"Location": f"{base}/v1/jobs/{job.id}"})


ETAG_NOTE = ("Answers carry an `ETag`; send it back in `If-None-Match` and an unchanged answer "
             "is a 304 without a body. A server may answer from memory for up to "
             "`IMGQ_STATUS_CACHE_SECONDS`, never missing a change made through it.")


def _json(body: bytes, etag: str) -> Response:
    return Response(body, media_type="application/json",
                    headers={"ETag": etag, "Cache-Control": "no-cache"})


def _not_modified(etag: str) -> Response:
    return Response(status_code=304, headers={"ETag": etag, "Cache-Control": "no-cache"})


@router.get("", response_model=JobList, summary="Your jobs, newest first, or several by id",
            description="Without `ids`: the jobs of the caller's API key (all jobs for an admin "
            "key); in the keyless mode (IMGQ_AUTH=none), the jobs submitted from the caller's "
            "address. With `ids`: those jobs, where the caller may open them (in the keyless "
            "mode a job's id is enough). " + ETAG_NOTE)
async def list_jobs(
    request: Request,
    ids: Annotated[str | None, Query(description="Comma-separated job ids; unknown ids "
                                     "are left out.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> JobList | Response:
    # Pollers of several jobs send `ids`: the runtime, the base URL and the caller's scope are
    # read here rather than as dependencies, each of which costs FastAPI a resolution.
    rt, base, scope = get_runtime(request), base_url(request), scope_of(request)
    if ids is not None:
        wanted = [i.strip() for i in ids.split(",") if i.strip()][:200]
        found = await reads_of(request).many(wanted, base, scope)
        etag = etag_of([(s.job_id, s.version) for s in found], base)
        if matches(request.headers.get("if-none-match"), etag):
            return _not_modified(etag)
        body = (b'{"jobs":[' + b",".join(s.body for s in found)
                + f'],"total":{len(found)},"limit":{len(wanted)},"offset":0,"next":null}}'.encode())
        return _json(body, etag)
    page, total = await anyio.to_thread.run_sync(
        lambda: rt.repo.list_jobs(limit, offset, scope=scope))
    more = offset + limit < total
    return JobList(jobs=[job_out(j, base) for j in page], total=total, limit=limit,
                   offset=offset,
                   next=f"{base}/v1/jobs?limit={limit}&offset={offset + limit}" if more else None)


@router.get("/{job_id}", response_model=JobOut, summary="A job and its items",
            description=ETAG_NOTE, responses={304: {"description": "Not modified."},
                                              **errors(404)})
async def get_job(job_id: str, request: Request) -> Response:
    # The most frequent request of all (pollers): the base URL and the caller's scope are
    # read here rather than as dependencies, each of which costs FastAPI a resolution.
    found = await reads_of(request).one(job_id, base_url(request), scope_of(request))
    if matches(request.headers.get("if-none-match"), found.etag):
        return _not_modified(found.etag)
    return _json(found.body, found.etag)


def reads_of(request: Request) -> JobReads:
    return request.app.state.job_reads  # type: ignore[no-any-return]


@router.get(
    "/{job_id}/items/{index}/result", summary="Download one result",
    responses={200: {"content": {"image/*": {}}, "description": "The result image."},
               307: {"description": "A presigned S3 URL (IMGQ_S3_PRESIGNED_DOWNLOADS)."},
               **errors(404, 409, 410)},
)
async def get_result(job_id: str, index: int, request: Request) -> Response:
    # One download per item: the runtime and the caller's scope are read here rather than as
    # dependencies. The item is read on the event loop, as the status reads: on SQLite on its
    # thread (on a connection that never waits for a lock), on PostgreSQL on its connection
    # of its own; and so is a small result from local files: no hand-off to a thread and
    # back, which cost more than both reads. Else (another database, or SQLite locked) the
    # item, its state and a small result's bytes come in one hand-off, answered as a plain
    # response (a stream only for a large result).
    rt, scope = get_runtime(request), scope_of(request)
    if rt.repo.polls_at_once:
        item = find_item_at_once(rt, scope, job_id, index)
    elif rt.repo.polls_on_loop:
        item = await find_item_on_loop(rt, scope, job_id, index)
    else:
        item = None
    if item is None:
        return await anyio.to_thread.run_sync(_result, rt, scope, job_id, index)
    media, headers = _result_headers(item, index)
    whole = result_at_once(rt.blobs, item)
    if whole is not None:
        return WholeResult(whole, media_type=media, headers=headers)
    return await anyio.to_thread.run_sync(_answer, rt, item, media, headers)


def _result(rt: Runtime, scope: Scope, job_id: str, index: int) -> Response:
    item = find_item(rt, scope, job_id, index)
    return _answer(rt, item, *_result_headers(item, index))


def _answer(rt: Runtime, item: Item, media: str, headers: dict[str, str]) -> Response:
    """The result of an item that has one: a presigned URL, its bytes, or their stream."""
    presign = getattr(rt.blobs, "presigned_url", None)  # S3 stores have it
    if rt.settings.s3_presigned_downloads and presign is not None:
        url = presign(item.result_key, item.result_name or "result", media)
        return RedirectResponse(url, status_code=307)  # the bytes come straight from S3
    size, whole, chunks = read_result(rt.blobs, item)
    if whole is not None:
        return WholeResult(whole, media_type=media, headers=headers)  # Content-Length its own
    return StreamingResponse(chunks, media_type=media,
                             headers={**headers, "Content-Length": str(size)})


def _result_headers(item: Item, index: int) -> tuple[str, dict[str, str]]:
    """The media type and Content-Disposition of an item's result; 409 when it has none."""
    if item.status != Status.succeeded or not item.result_key:
        raise Conflict(f"item {index} has no result: it is {item.status.value}",
                       status=item.status.value)
    fmt = (item.result_meta or {}).get("format", "png")
    media = OUTPUT_FORMATS.get(fmt, ("application/octet-stream", ""))[0]
    return media, content_disposition(item.result_name or "result")


@router.get(
    "/{job_id}/archive", summary="Download every finished result as one ZIP",
    responses={200: {"content": {"application/zip": {}}}, **errors(404, 409, 410)},
    description="A ZIP of every succeeded item's result. When a result's file is no longer "
    "in storage, the answer is a 410 `result_missing` naming the items, never a ZIP with "
    "entries left out.",
)
async def get_archive(job_id: str, rt: RuntimeDep, scope: ScopeDep) -> StreamingResponse:
    job = await anyio.to_thread.run_sync(lambda: rt.repo.get_job(job_id, scope=scope))
    if job.data_removed:
        raise Gone()
    done = [i for i in job.items if i.status == Status.succeeded and i.result_key]
    if not done:
        raise Conflict("no finished results in this job yet", status=job.status.value)
    names = unique_names([i.result_name or f"result-{i.idx}" for i in done])
    await require_results(rt.blobs, done)
    entries = [(n, i.result_key, i.finished_at or job.created_at) for n, i in zip(names, done)]
    return StreamingResponse(stream_zip(rt.blobs, entries), media_type="application/zip",  # type: ignore[arg-type]
                             headers=content_disposition(f"imgq-{job_id[:8]}.zip"))


@router.post("/{job_id}/cancel", response_model=JobOut, summary="Cancel a job",
             description="Queued items never run; running items stop at their next step; "
             "finished items keep their results.", responses=errors(404))
async def cancel_job(job_id: str, rt: RuntimeDep, base: BaseUrl, scope: ScopeDep) -> JobOut:
    return job_out(
        await anyio.to_thread.run_sync(lambda: rt.repo.cancel_job(job_id, scope=scope)), base)


@router.delete("/{job_id}", status_code=204, summary="Delete a job and its files",
               responses=errors(404))
async def delete_job(job_id: str, rt: RuntimeDep, scope: ScopeDep) -> Response:
    await anyio.to_thread.run_sync(lambda: rt.repo.cancel_job(job_id, scope=scope))
    keys = await anyio.to_thread.run_sync(lambda: rt.repo.delete_job(job_id, scope=scope))
    await anyio.to_thread.run_sync(rt.blobs.delete, keys)
    await anyio.to_thread.run_sync(rt.blobs.delete_under, f"{job_id}/")  # unrecorded ones too
    return Response(status_code=204)
