"""One database poll per job, shared by every live event stream open on it.

A thousand browsers watching one job would otherwise read the database a thousand times per
poll interval and fill the thread pool that every other request needs. Here the first stream
on a job starts a watch that reads the job's version every `events_poll_interval_seconds` and, when
it moved, loads the job once; every stream waits on the watch and sends its own diff. The
watch stops when its last stream ends. IMGQ_EVENTS_MAX_STREAMS_PER_JOB bounds the streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio

from imgq.domain.access import SYSTEM
from imgq.domain.models import Job
from imgq.errors import TooBusy
from imgq.worker.runtime import Runtime

log = logging.getLogger(__name__)


class JobWatch:
    def __init__(self, rt: Runtime, job_id: str, job: Job, version: int) -> None:
        self.rt, self.job_id = rt, job_id
        self.job, self.version = job, version
        self.deleted = False
        self.streams = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait(self, timeout: float) -> None:
        """Until the job changes or `timeout` seconds pass."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def _poll(self) -> None:
        interval = self.rt.settings.events_poll_interval_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await self._look()
            except Exception:  # noqa: BLE001 - the database may come back; keep watching
                log.warning("job %s: live events could not read the job", self.job_id,
                            exc_info=True, extra={"job_id": self.job_id})
            if self.deleted:
                return

    async def _look(self) -> None:
        repo = self.rt.repo
        # The streams were let in with their caller's scope; the shared watch reads as imgq.
        now = await anyio.to_thread.run_sync(lambda: repo.job_version(self.job_id, scope=SYSTEM))
        if now is None:
            self.deleted = True
        elif now != self.version:
            snap = await anyio.to_thread.run_sync(
                lambda: repo.job_snapshot(self.job_id, scope=SYSTEM))
            if snap is None:
                return  # deleted in between: the next look says so
            self.job, self.version = snap
        else:
            return
        self._changed.set()
        self._changed = asyncio.Event()


class JobWatches:
    """The watches of one app, by job id."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._watches: dict[str, JobWatch] = {}

    def streams_on(self, job_id: str) -> int:
        watch = self._watches.get(job_id)
        return 0 if watch is None else watch.streams

    def check_room(self, job_id: str) -> None:
        limit = self.rt.settings.events_max_streams_per_job
        watch = self._watches.get(job_id)
        if watch is not None and watch.streams >= limit:
            raise TooBusy(f"{limit} live event streams are already open on this job "
                          "(IMGQ_EVENTS_MAX_STREAMS_PER_JOB); poll GET /v1/jobs/{id} instead")

    @contextlib.asynccontextmanager
    async def follow(self, job_id: str, job: Job, version: int) -> AsyncIterator[JobWatch]:
        watch = self._watches.get(job_id)
        if watch is None or watch.deleted:
            watch = self._watches[job_id] = JobWatch(self.rt, job_id, job, version)
            watch.start()
        watch.streams += 1
        try:
            yield watch
        finally:
            watch.streams -= 1
            if watch.streams == 0 and self._watches.get(job_id) is watch:
                del self._watches[job_id]
                await watch.stop()
