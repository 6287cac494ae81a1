"""Integer task ids of an older API (the Image Queue Demo), mapped to imgq jobs."""

from __future__ import annotations

from sqlalchemy import insert, select

from imgq.domain.access import Scope
from imgq.store.repository.base import RepositoryBase, utcnow, visible
from imgq.store.tables import compat_tasks, jobs


class CompatTaskStore(RepositoryBase):
    def add_compat_task(self, task_id: int, system: str, job_id: str, filename: str) -> None:
        with self._write() as conn:
            conn.execute(insert(compat_tasks).values(
                id=task_id, system=system, job_id=job_id, filename=filename[:300],
                created_at=utcnow()))

    def compat_task_exists(self, system: str, task_id: int) -> bool:
        """Whether the id is taken, whoever's task it is (for choosing a free id)."""
        with self.engine.connect() as conn:
            return conn.execute(select(compat_tasks.c.id).where(
                compat_tasks.c.system == system, compat_tasks.c.id == task_id)).first() is not None

    def compat_task_job(self, system: str, task_id: int | None = None,
                        filename: str | None = None, *, scope: Scope) -> str | None:
        """The job behind an integer task id, or behind the newest task of a file name, among
        the jobs the scope opens (a file name is a lookup, so it only finds the caller's own)."""
        query = (select(compat_tasks.c.job_id)
                 .join(jobs, jobs.c.id == compat_tasks.c.job_id)
                 .where(compat_tasks.c.system == system,
                        *visible(scope, by_id=task_id is not None and filename is None)))
        if task_id is not None:
            query = query.where(compat_tasks.c.id == task_id)
        if filename is not None:
            query = query.where(compat_tasks.c.filename == filename)
        with self.engine.connect() as conn:
            return conn.execute(
                query.order_by(compat_tasks.c.created_at.desc()).limit(1)).scalar()
