"""Versions of a job, for live events: a number that grows with every change."""

from __future__ import annotations

from sqlalchemy import Connection, func, select

from imgq.domain.models import Job
from imgq.store.repository.base import RepositoryBase
from imgq.store.tables import items, jobs


class EventStore(RepositoryBase):
    def job_version(self, job_id: str) -> int | None:
        """A number that grows with every change to the job or its items; None: no such job."""
        with self.engine.connect() as conn:
            return self._job_version(conn, job_id)

    def job_snapshot(self, job_id: str) -> tuple[Job, int] | None:
        """The job with its version; the version is read first, so it is never newer."""
        with self.engine.connect() as conn:
            version = self._job_version(conn, job_id)
            found = self.load_jobs(conn, jobs.c.id == job_id)
        return (found[0], version) if found and version is not None else None

    def _job_version(self, conn: Connection, job_id: str) -> int | None:
        own = conn.execute(select(jobs.c.version).where(jobs.c.id == job_id)).scalar()
        if own is None:
            return None
        total = conn.execute(select(func.coalesce(func.sum(items.c.version), 0))
                             .where(items.c.job_id == job_id)).scalar_one()
        return int(own) + int(total)
