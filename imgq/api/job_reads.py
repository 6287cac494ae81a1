"""Job status reads for pollers: one query per read, answers kept for a moment, and ETags.

A read is answered from memory when this server read the same job less than
`IMGQ_STATUS_CACHE_SECONDS` ago and has written nothing since (so a client never misses a change
it made through this server; workers' progress shows at most that late). The body and its
ETag are made once per version of the job, so a poller that sends `If-None-Match` gets a 304
and one that does not gets bytes already serialised. What comes from memory is held to the
caller's scope as the repository holds what it reads (`Scope.opens`).

What is not in memory is read one query at a time: the reads that arrive while a query runs
are made together by the next one (one query, one hand-off to a thread, for all their jobs).
Under a burst of polls (many pollers, or a backlog after the server was held up) a query per
request meant as many threads waking, waiting for the CPU and for each other's GIL, before
the event loop could answer. There is no hand-off to a thread on PostgreSQL: the event loop
sends the query on a connection of its own and waits for the answer on the socket
(`imgq.store.repository.server_polls`). Nor on SQLite for a short query (`LOOP_READ_ROWS`):
it is made on the event loop's thread on a connection that never waits for a lock
(`imgq.store.db.status_engine`); only when the database is locked is it made in a thread,
which waits.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
from cachetools import LRUCache

from imgq.domain.access import SYSTEM, Scope
from imgq.domain.models import Job
from imgq.domain.views import job_json
from imgq.errors import NotFound
from imgq.worker.runtime import Runtime

MAX_ENTRIES = 4096
#: Jobs one query reads at most; reads that would make it longer wait for the next one.
MAX_READ_IDS = 200  # as many as one ?ids= list may name
#: Rows (items, at most IMGQ_MAX_FILES a job) a query may read to be made on the event loop's
#: own thread (SQLite), about a millisecond of it; a longer one holds every other request for
#: its whole time there, and is made in a thread, which lets the loop in between its turns.
LOOP_READ_ROWS = 100


@dataclass(frozen=True)
class Snapshot:
    """A job's answer, without the job: thousands of them kept add no objects (the job's items
    and their dicts) to what the cyclic collector walks in its full collections."""

    job_id: str
    owner: str | None
    version: int
    etag: str
    body: bytes  # the JSON of GET /v1/jobs/{id}


@dataclass
class _Read:
    """One query's worth of job ids, and its answer: every job found, whoever owns it."""

    done: asyncio.Future[dict[str, tuple[Job, int]]]
    ids: set[str] = field(default_factory=set)


class JobReads:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.ttl = rt.settings.status_cache_seconds
        self._kept: LRUCache[tuple[str, str], tuple[Snapshot, float, int]] = LRUCache(MAX_ENTRIES)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next: _Read | None = None  # not started yet: later reads join it
        self._running: asyncio.Task[None] | None = None  # the query under way

    async def one(self, job_id: str, base: str, scope: Scope) -> Snapshot:
        found = await self.many([job_id], base, scope)
        if not found:
            raise NotFound(f"job {job_id} not found")
        return found[0]

    async def many(self, job_ids: Sequence[str], base: str, scope: Scope) -> list[Snapshot]:
        """The jobs in the order asked; unknown ids, and those the scope does not open, are
        left out."""
        now, writes = time.monotonic(), self.rt.repo.writes
        kept = {i: s for i in job_ids if (s := self._fresh(i, base, now, writes)) is not None
                and scope.opens(s.owner)}
        missing = [i for i in job_ids if i not in kept]
        if missing:
            found = await self._read(missing)
            for job, version in (found[i] for i in missing if i in found):
                if scope.opens(job.owner):
                    kept[job.id] = self._keep(self._made(job, version, base), base, now, writes)
        return [kept[i] for i in job_ids if i in kept]

    async def _read(self, job_ids: Sequence[str]) -> dict[str, tuple[Job, int]]:
        """The jobs found of these ids, read by a query that starts after this call (never
        one already under way, so a change made before the call is seen), with the ids other
        reads want meanwhile; each caller holds the answer to its own scope."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests start several): nothing carries over
            self._loop, self._next, self._running = loop, None, None
        read = self._next
        if read is None or len(read.ids) + len(job_ids) > MAX_READ_IDS:
            read = self._next = _Read(loop.create_future())
            self._start(read)
        read.ids.update(job_ids)
        return await asyncio.shield(read.done)  # a caller that goes away leaves the others theirs

    def _start(self, read: _Read) -> None:
        """Run `read` after the query under way; a task of its own, which no caller's
        cancellation stops."""
        before = self._running
        task = asyncio.get_running_loop().create_task(self._query(read, before))
        self._running = task

    async def _query(self, read: _Read, before: asyncio.Task[None] | None) -> None:
        if before is not None:
            await asyncio.wait([before])
        if self._next is read:
            self._next = None  # from here on, new reads wait for the next query
        try:
            found = await self._poll(sorted(read.ids))
        except Exception as exc:  # noqa: BLE001 - each waiting read answers with the error
            read.done.set_exception(exc)
            read.done.exception()  # retrieved: every waiter that is left raises it
            return
        read.done.set_result({job.id: (job, version) for job, version in found})

    async def _poll(self, job_ids: list[str]) -> list[tuple[Job, int]]:
        """On PostgreSQL, on the event loop's own connection, which waits for the answer as
        for any socket. On a SQLite file, a short query on this thread (no hand-off to a
        thread and back) unless the database is locked; a long one, and then, in a thread
        that waits for the lock. Otherwise (an in-memory database), in a thread."""
        repo = self.rt.repo
        if repo.polls_on_loop:
            return await repo.poll_jobs_on_loop(job_ids)
        if repo.polls_at_once and len(job_ids) * self.rt.settings.max_files <= LOOP_READ_ROWS:
            found = repo.poll_jobs(job_ids)
            if found is not None:
                return found
        return await anyio.to_thread.run_sync(
            lambda: repo.get_jobs_versioned(job_ids, scope=SYSTEM))

    def _made(self, job: Job, version: int, base: str) -> Snapshot:
        """The snapshot of this version of the job: the one a read sharing the same query
        made already, or a new one."""
        entry = self._kept.get((job.id, base))
        if entry is not None and entry[0].version == version:
            return entry[0]
        return snapshot(job, version, base)

    def _fresh(self, job_id: str, base: str, now: float, writes: int) -> Snapshot | None:
        entry = self._kept.get((job_id, base))
        if entry is None:
            return None
        found, at, seen_writes = entry
        return found if now - at < self.ttl and seen_writes == writes else None

    def _keep(self, found: Snapshot, base: str, now: float, writes: int) -> Snapshot:
        if self.ttl > 0:
            self._kept[(found.job_id, base)] = (found, now, writes)
        return found


def snapshot(job: Job, version: int, base: str) -> Snapshot:
    return Snapshot(job.id, job.owner, version, etag_of([(job.id, version)], base),
                    job_json(job, base))


def etag_of(versions: Sequence[tuple[str, int]], base: str) -> str:
    """A strong ETag for a body made from these jobs at these versions for this base URL.
    Versions only grow, so their sum changes with every change to the same jobs; the digest
    tells different jobs (and base URLs) apart."""
    digest = zlib.crc32("|".join([base, *(f"{i}:{v}" for i, v in versions)]).encode())
    return f'"{sum(v for _, v in versions)}-{digest:08x}-{len(versions)}"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """Does a request's If-None-Match name this ETag (weak comparison, as RFC 9110 asks)?"""
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags
