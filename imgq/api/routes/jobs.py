"""/v1/jobs: submit, inspect, download, cancel, delete."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from imgq.api.archive import stream_zip
from imgq.api.deps import BaseUrl, DispatcherDep, RuntimeDep, errors, load_item
from imgq.api.schemas import JobList, JobOut, job_out
from imgq.api.service import parse_ttl, submit_job
from imgq.api.uploads import receive_upload
from imgq.domain.names import content_disposition, unique_names
from imgq.domain.status import Status
from imgq.errors import Conflict, Gone, InvalidRequest
from imgq.ops.image import OUTPUT_FORMATS

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

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
                                 "header; retried with backoff. Needs IMGQ_WEBHOOK_SECRET."},
            },
        }}},
    }
}


@router.post(
    "", status_code=201, response_model=JobOut, openapi_extra=SUBMIT_BODY,
    summary="Submit images and a pipeline",
    responses=errors(400, 413, 415, 422),
    description="Answers at once with the job and its items, all queued. Uploads are streamed "
    "to storage; every limit is checked before anything is stored. `Location` points at the job.",
)
async def create_job(request: Request, response: Response, rt: RuntimeDep,
                     dispatcher: DispatcherDep, base: BaseUrl) -> JobOut:
    s = rt.settings
    upload = await receive_upload(request, rt.blobs.staging_dir(), s.max_files, s.max_file_bytes)
    try:
        pipeline = upload.fields.get("pipeline")
        if pipeline is None:
            raise InvalidRequest("missing the 'pipeline' field; see GET /v1/operations")
        ttl = parse_ttl(rt, upload.fields.get("ttl_seconds"))
        job = await submit_job(rt, dispatcher, upload, pipeline, ttl,
                               callback_url=upload.fields.get("callback_url"), base_url=base)
    finally:
        upload.discard()
    out = job_out(job, base)
    response.headers["Location"] = out.urls.self
    return out


@router.get("", response_model=JobList, summary="List jobs, newest first, or several by id")
async def list_jobs(
    rt: RuntimeDep, base: BaseUrl,
    ids: Annotated[str | None, Query(description="Comma-separated job ids; unknown ids "
                                     "are left out.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JobList:
    if ids is not None:
        wanted = [i.strip() for i in ids.split(",") if i.strip()][:200]
        found = await anyio.to_thread.run_sync(rt.repo.get_jobs, wanted)
        return JobList(jobs=[job_out(j, base) for j in found], total=len(found), limit=len(wanted),
                       offset=0, next=None)
    found, total = await anyio.to_thread.run_sync(rt.repo.list_jobs, limit, offset)
    more = offset + limit < total
    return JobList(jobs=[job_out(j, base) for j in found], total=total, limit=limit,
                   offset=offset,
                   next=f"{base}/v1/jobs?limit={limit}&offset={offset + limit}" if more else None)


@router.get("/{job_id}", response_model=JobOut, summary="A job and its items",
            responses=errors(404))
async def get_job(job_id: str, rt: RuntimeDep, base: BaseUrl) -> JobOut:
    return job_out(await anyio.to_thread.run_sync(rt.repo.get_job, job_id), base)


@router.get(
    "/{job_id}/items/{index}/result", summary="Download one result",
    responses={200: {"content": {"image/*": {}}, "description": "The result image."},
               307: {"description": "A presigned S3 URL (IMGQ_S3_PRESIGNED_DOWNLOADS)."},
               **errors(404, 409, 410)},
)
async def get_result(job_id: str, index: int, rt: RuntimeDep) -> Response:
    job, item = await load_item(rt, job_id, index)
    if item.status != Status.succeeded or not item.result_key:
        raise Conflict(f"item {index} has no result: it is {item.status.value}",
                       status=item.status.value)
    fmt = (item.result_meta or {}).get("format", "png")
    media = OUTPUT_FORMATS.get(fmt, ("application/octet-stream", ""))[0]
    presign = getattr(rt.blobs, "presigned_url", None)  # S3 stores have it
    if rt.settings.s3_presigned_downloads and presign is not None:
        url = presign(item.result_key, item.result_name or "result", media)
        return RedirectResponse(url, status_code=307)  # the bytes come straight from S3
    size = await anyio.to_thread.run_sync(rt.blobs.size, item.result_key)
    headers = {**content_disposition(item.result_name or "result"), "Content-Length": str(size)}
    chunks = await anyio.to_thread.run_sync(rt.blobs.iter_bytes, item.result_key)
    return StreamingResponse(chunks, media_type=media, headers=headers)


@router.get(
    "/{job_id}/archive", summary="Download every finished result as one ZIP",
    responses={200: {"content": {"application/zip": {}}}, **errors(404, 409, 410)},
)
async def get_archive(job_id: str, rt: RuntimeDep) -> StreamingResponse:
    job = await anyio.to_thread.run_sync(rt.repo.get_job, job_id)
    if job.data_removed:
        raise Gone()
    done = [i for i in job.items if i.status == Status.succeeded and i.result_key]
    if not done:
        raise Conflict("no finished results in this job yet", status=job.status.value)
    names = unique_names([i.result_name or f"result-{i.idx}" for i in done])
    entries = [(n, i.result_key, i.finished_at or job.created_at) for n, i in zip(names, done)]
    return StreamingResponse(stream_zip(rt.blobs, entries), media_type="application/zip",  # type: ignore[arg-type]
                             headers=content_disposition(f"imgq-{job_id[:8]}.zip"))


@router.post("/{job_id}/cancel", response_model=JobOut, summary="Cancel a job",
             description="Queued items never run; running items stop at their next step; "
             "finished items keep their results.", responses=errors(404))
async def cancel_job(job_id: str, rt: RuntimeDep, base: BaseUrl) -> JobOut:
    return job_out(await anyio.to_thread.run_sync(rt.repo.cancel_job, job_id), base)


@router.delete("/{job_id}", status_code=204, summary="Delete a job and its files",
               responses=errors(404))
async def delete_job(job_id: str, rt: RuntimeDep) -> Response:
    await anyio.to_thread.run_sync(rt.repo.cancel_job, job_id)
    keys = await anyio.to_thread.run_sync(rt.repo.delete_job, job_id)
    await anyio.to_thread.run_sync(rt.blobs.delete, keys)
    return Response(status_code=204)
