"""GET /processed/<filename>: the processed image at the path the Image Queue Demo's result page
shows and the FastAPI + Celery demo's task result gives ("processed/<name>").

Both older systems wrote results to a folder under the uploaded file's name and served it as
it was. Here the name finds the newest upload of that name made through either API, among the
jobs the caller may open, and the path serves that job's result while it is kept. With API keys,
a name only finds the caller's own uploads, so one client never reads another's result by
guessing a file name (docs/compat.md).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from imgq.api.compat import celery_demo, common, queue_demo
from imgq.domain.models import Job
from imgq.domain.status import Status
from imgq.errors import ImgqError

#: (compat_tasks system, job source, the setting that switches the API on)
SYSTEMS = ((queue_demo.SYSTEM, queue_demo.SOURCE, "compat_queue_demo"),
           (celery_demo.SYSTEM, celery_demo.SOURCE, "compat_celery_demo"))


def render_error(exc: ImgqError) -> tuple[int, Any]:
    return exc.status_code, {"detail": exc.message}


router = common.compat_router(queue_demo.TAG, render_error)


async def _newest(request: Request, name: str) -> Job | None:
    settings = common.runtime(request).settings
    found = [await common.job_by_filename(request, system, source, name)
             for system, source, setting in SYSTEMS if getattr(settings, setting)]
    jobs = [j for j in found if j is not None and j.items]
    return max(jobs, key=lambda j: j.created_at) if jobs else None


@router.get("/processed/{name}", tags=[celery_demo.TAG],
            summary="The processed image of the newest upload of this file name",
            description="Compatibility route (Image Queue Demo, FastAPI + Celery demo): 404 "
            "until that upload is processed, and once its time is up.",
            responses={200: {"content": {"image/*": {}}}})
async def processed(name: str, request: Request) -> Response:
    job = await _newest(request, name)
    if job is None:
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    item = job.items[0]
    if common.outcome(item) != Status.succeeded or common.is_expired(job, item):
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    return await common.stream_result(request, job, item, name, inline=True)
