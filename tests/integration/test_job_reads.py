"""Status reads that miss memory share queries, on the real repository (SQLite): the reads that
come while one query runs are made by the next one, and each caller sees its own scope."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from pathlib import Path

from imgq.api.job_reads import JobReads
from imgq.config import load_settings
from imgq.domain.access import SYSTEM, Scope
from imgq.domain.models import Job
from imgq.worker.runtime import Runtime
from tests.contract.conftest import make_job

READS = 120


def test_a_burst_of_reads_costs_two_queries_and_each_caller_sees_its_own_jobs(
    tmp_path: Path,
) -> None:
    rt = Runtime.from_settings(load_settings(data_dir=tmp_path, status_cache_seconds=0),
                               run_migrations=True)
    jobs = [make_job(2) for _ in range(6)]
    for n, job in enumerate(jobs):
        job.owner = f"key:{n % 2}"
        rt.repo.create_job(job)
    queries: list[list[str]] = []
    real_read = rt.repo.get_jobs_versioned

    def counted(job_ids: Sequence[str], *, scope: Scope) -> list[tuple[Job, int]]:
        queries.append(list(job_ids))
        return real_read(job_ids, scope=scope)

    rt.repo.get_jobs_versioned = counted  # type: ignore[method-assign]
    owners = [Scope(owner="key:0"), Scope(owner="key:1"), Scope(owner=None, ids_open=True)]

    async def burst() -> list[list[str]]:
        reads = JobReads(rt)
        return [[s.job_id for s in found] for found in await asyncio.gather(*(
            reads.many([jobs[n % 6].id, jobs[(n + 1) % 6].id], "http://x", owners[n % 3])
            for n in range(READS)))]

    try:
        seen = asyncio.run(burst())
        again = asyncio.run(burst())  # another event loop, as a second test client makes
    finally:
        rt.close()
    # a query at most for the first read and one for all that came while it ran, per burst
    assert len(queries) <= 4, f"{len(queries)} queries for {READS} reads, twice"
    assert {i for q in queries for i in q} == {j.id for j in jobs}
    for n, ids in enumerate(seen):
        wanted = [jobs[n % 6], jobs[(n + 1) % 6]]
        scope = owners[n % 3]
        assert ids == [j.id for j in wanted if scope.opens(j.owner)]
    assert again == seen
    assert all(len(q) == len(set(q)) for q in queries)  # each job read once per query


def test_answers_kept_in_memory_add_little_for_the_collector_to_walk(tmp_path: Path) -> None:
    """The collector's full collections walk every tracked object the server keeps: an answer
    kept must not keep its job, items and their dicts (tens of objects each) with it."""
    rt = Runtime.from_settings(load_settings(data_dir=tmp_path, status_cache_seconds=10),
                               run_migrations=True)
    jobs = [make_job(10) for _ in range(100)]
    for job in jobs:
        rt.repo.create_job(job)
    reads = JobReads(rt)

    async def read(some: list[Job]) -> int:
        return len(await reads.many([j.id for j in some], "http://x", SYSTEM))

    try:
        assert asyncio.run(read(jobs[:50])) == 50  # what a first read builds once
        gc.collect()
        before = len(gc.get_objects())
        assert asyncio.run(read(jobs[50:])) == 50
        gc.collect()
        added = len(gc.get_objects()) - before
    finally:
        rt.close()
    assert added < 5 * 50, f"{added} objects tracked for 50 answers kept"
