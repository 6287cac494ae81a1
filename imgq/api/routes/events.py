"""GET /v1/jobs/{id}/events: live progress as Server-Sent Events.

The stream watches the database, not a process-local queue, so it works the same whether
the items run in this process, in another API server's pool or on Celery workers: every
`events_poll_interval_seconds` the server reads the job's version (a counter that every UPDATE
of the job or of its items bumps) and, when it moved, loads the job and sends what changed.
Every stream open on one job shares that one read; at most `IMGQ_EVENTS_MAX_STREAMS_PER_JOB`
streams may be open on a job (429 beyond).

Events, in order:
- `item`: one item as GET /v1/jobs/{id} shows it, whenever its state, progress or stage changed;
- `job`: the job's summary (status, progress, counts, expiry), whenever it changed;
- `done`: once, the whole job, when it reaches a terminal state; then the stream ends.
Comment lines (`: keep-alive`) are sent on a quiet stream every `events_heartbeat_seconds` seconds.

Every event's `id` is the job's version when it was read. Reconnecting with `Last-Event-ID`
(browsers do it by themselves) skips what the client already has: nothing when the version did
not move, else the current state of every item, then the changes as before.

A plain StreamingResponse is enough here: the format is four kinds of lines, and the loop that
polls the database already owns the timing of heartbeats, so sse-starlette would add a
dependency without removing code.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from imgq.api.auth import ScopeDep
from imgq.api.deps import BaseUrl, RuntimeDep, errors
from imgq.api.job_watch import JobWatch, JobWatches
from imgq.api.schemas import JobOut, job_out
from imgq.domain.access import Scope
from imgq.domain.models import Job
from imgq.domain.status import JobStatus
from imgq.errors import NotFound
from imgq.worker.runtime import Runtime

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

ACTIVE = frozenset({JobStatus.queued, JobStatus.running})
RECONNECT_MS = 2000
SUMMARY_FIELDS = ("id", "status", "progress", "counts", "cancel_requested", "data_removed",
                  "expires_at")

DESCRIPTION = __doc__.split("\n\n", 1)[1].rsplit("\n\n", 1)[0] if __doc__ else ""


@router.get(
    "/{job_id}/events", summary="Live progress of a job (Server-Sent Events)",
    description=DESCRIPTION, response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "An event stream that ends after the `done` event."},
               **errors(404, 429)},
)
async def job_events(
    job_id: str, request: Request, rt: RuntimeDep, base: BaseUrl, scope: ScopeDep,
    last_event_id: Annotated[str | None, Header(
        description="The id of the last event received; sent by browsers on reconnect.")] = None,
    since: Annotated[str | None, Query(
        description="Same as Last-Event-ID, for clients that cannot set headers.")] = None,
) -> StreamingResponse:
    watches: JobWatches = request.app.state.job_watches
    watches.check_room(job_id)
    first = await anyio.to_thread.run_sync(lambda: rt.repo.job_snapshot(job_id, scope=scope))
    if first is None:
        raise NotFound(f"job {job_id} not found")
    stream = JobStream(rt, scope, job_id, base, _version_of(last_event_id or since))
    return StreamingResponse(
        stream.run(watches, *first), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _version_of(raw: str | None) -> int | None:
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


def format_event(event: str, data: Any, event_id: int | None = None) -> str:
    lines = [] if event_id is None else [f"id: {event_id}"]
    lines += [f"event: {event}", "data: " + json.dumps(data, separators=(",", ":"))]
    return "\n".join(lines) + "\n\n"


class JobStream:
    """The diff between two looks at a job, as events."""

    def __init__(self, rt: Runtime, scope: Scope, job_id: str, base: str,
                 resume_at: int | None) -> None:
        self.rt, self.scope, self.job_id, self.base = rt, scope, job_id, base
        self.resume_at = resume_at
        self.items: dict[int, dict[str, Any]] = {}
        self.summary: dict[str, Any] | None = None

    async def run(self, watches: JobWatches, job: Job, version: int) -> AsyncIterator[str]:
        """Until the job is finished or deleted; Starlette stops it when the client leaves."""
        yield f"retry: {RECONNECT_MS}\n\n"
        out = job_out(job, self.base)
        if self.resume_at == version:
            self._remember(out)  # the client has this state already
        else:
            for chunk in self._changes(out, version):
                yield chunk
        async with watches.follow(self.job_id, job, version) as watch:
            async for chunk in self._follow(watch, out, version):
                yield chunk

    async def _follow(self, watch: JobWatch, out: JobOut, version: int) -> AsyncIterator[str]:
        heartbeat = self.rt.settings.events_heartbeat_seconds
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        while out.status in ACTIVE:
            if watch.deleted:
                yield format_event("deleted", {"id": self.job_id})
                return
            if watch.version != version:
                out, version = job_out(watch.job, self.base), watch.version
                for chunk in self._changes(out, version):
                    quiet_since = loop.time()
                    yield chunk
                continue
            await watch.wait(max(0.0, quiet_since + heartbeat - loop.time()))
            if loop.time() - quiet_since >= heartbeat:
                quiet_since = loop.time()
                yield ": keep-alive\n\n"
        yield format_event("done", out.model_dump(mode="json"), version)


    def _changes(self, out: JobOut, version: int) -> list[str]:
        chunks = []
        for item in out.items:
            view = item.model_dump(mode="json")
            if self.items.get(item.index) != view:
                chunks.append(format_event("item", view, version))
        summary = _summary(out)
        if summary != self.summary:
            chunks.append(format_event("job", summary, version))
        self._remember(out)
        return chunks

    def _remember(self, out: JobOut) -> None:
        self.items = {i.index: i.model_dump(mode="json") for i in out.items}
        self.summary = _summary(out)


def _summary(out: JobOut) -> dict[str, Any]:
    data = out.model_dump(mode="json", include=set(SUMMARY_FIELDS))
    return {k: data[k] for k in SUMMARY_FIELDS}
