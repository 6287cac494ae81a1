"""Job status reads for pollers: one query per read, answers kept for a moment, and ETags.

A read is answered from memory when this server read the same job less than
`IMGQ_STATUS_CACHE_SECONDS` ago and has written nothing since (so a client never misses a change
it made through this server; workers' progress shows at most that late). The body and its
ETag are made once per version of the job, so a poller that sends `If-None-Match` gets a 304
and one that does not gets bytes already serialised. What comes from memory is held to the
caller's scope as the repository holds what it reads (`Scope.opens`).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
from cachetools import LRUCache

from imgq.domain.access import Scope
from imgq.domain.models import Job
from imgq.domain.views import job_out
from imgq.errors import NotFound
from imgq.worker.runtime import Runtime

MAX_ENTRIES = 4096


@dataclass(frozen=True)
class Snapshot:
    job: Job
    version: int
    etag: str
    body: bytes  # the JSON of GET /v1/jobs/{id}


class JobReads:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.ttl = rt.settings.status_cache_seconds
        self._kept: LRUCache[tuple[str, str], tuple[Snapshot, float, int]] = LRUCache(MAX_ENTRIES)

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
                and scope.opens(s.job.owner)}
        missing = [i for i in job_ids if i not in kept]
        if missing:
            for job, version in await anyio.to_thread.run_sync(
                    lambda: self.rt.repo.get_jobs_versioned(missing, scope=scope)):
                kept[job.id] = self._keep(snapshot(job, version, base), base, now, writes)
        return [kept[i] for i in job_ids if i in kept]

    def _fresh(self, job_id: str, base: str, now: float, writes: int) -> Snapshot | None:
        entry = self._kept.get((job_id, base))
        if entry is None:
            return None
        found, at, seen_writes = entry
        return found if now - at < self.ttl and seen_writes == writes else None

    def _keep(self, found: Snapshot, base: str, now: float, writes: int) -> Snapshot:
        if self.ttl > 0:
            self._kept[(found.job.id, base)] = (found, now, writes)
        return found


def snapshot(job: Job, version: int, base: str) -> Snapshot:
    return Snapshot(job, version, etag_of([(job.id, version)], base),
                    job_out(job, base).model_dump_json().encode())


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
