"""Versions of a job, for live events: a number that grows with every change."""

from __future__ import annotations

from sqlalchemy import Connection, and_, bindparam, func, select

from imgq.domain.access import Scope
from imgq.domain.models import Job
from imgq.store.repository.base import RepositoryBase, visible
from imgq.store.tables import items, jobs


class EventStore(RepositoryBase):
    def job_version(self, job_id: str, *, scope: Scope) -> int | None:
        """A number that grows with every change to the job or its items; None: no such job
        (or not one the scope opens)."""
        with self.engine.connect() as conn:
            return self._job_version(conn, job_id, scope)

    def job_snapshot(self, job_id: str, *, scope: Scope) -> tuple[Job, int] | None:
        """The job with its version, read together in one query."""
        with self.engine.connect() as conn:
            found = self.load_versioned(conn, and_(jobs.c.id == job_id, *visible(scope)))
        return found[0] if found else None

    def _job_version(self, conn: Connection, job_id: str, scope: Scope) -> int | None:
        found = conn.execute(JOB_VERSION.where(*visible(scope)), {"job_id": job_id}).scalar()
        return None if found is None else int(found)


_ITEMS_VERSION = (select(func.coalesce(func.sum(items.c.version), 0))
                  .where(items.c.job_id == jobs.c.id).scalar_subquery())
JOB_VERSION = select(jobs.c.version + _ITEMS_VERSION).where(jobs.c.id == bindparam("job_id"))
