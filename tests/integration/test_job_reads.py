"""Status reads that miss memory share queries, on the real repository (SQLite): the reads that
come while one query runs are made by the next one, and each caller sees its own scope. On
SQLite the query is made on the event loop's thread, and in a thread only when the database
is locked."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
from collections.abc import Sequence
from pathlib import Path

import anyio.to_thread

from imgq.api.job_reads import LOOP_READ_ROWS, JobReads
from imgq.config import load_settings
from imgq.domain.access import SYSTEM, Scope
from imgq.domain.models import Job
from imgq.worker.runtime import Runtime
from tests.contract.conftest import empty_tables, make_job
from tests.fixtures.locks import answered_after_unlock, exclusive_holder

READS = 120


def fresh_runtime(tmp_path: Path, cache_seconds: float = 0) -> Runtime:
    """A server's runtime on a new SQLite database; answers kept in memory for `cache_seconds`."""
    return Runtime.from_settings(
        load_settings(data_dir=tmp_path, status_cache_seconds=cache_seconds), run_migrations=True)


def test_a_burst_of_reads_costs_two_queries_and_each_caller_sees_its_own_jobs(
    tmp_path: Path,
) -> None:
    rt = fresh_runtime(tmp_path)
    jobs = [make_job(2) for _ in range(6)]
    for n, job in enumerate(jobs):
        job.owner = f"key:{n % 2}"
        rt.repo.create_job(job)
    queries: list[list[str]] = []
    real_read = rt.repo.poll_jobs

    def counted(job_ids: Sequence[str]) -> list[tuple[Job, int]]:
        queries.append(list(job_ids))
        return real_read(job_ids)

    rt.repo.poll_jobs = counted  # type: ignore[method-assign]
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
    rt = fresh_runtime(tmp_path, cache_seconds=10)
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


def read_with_no_thread_free(rt: Runtime, job: Job) -> list[str]:
    """The job's items' statuses read through JobReads while every thread of the event loop's
    default pool is taken (as uploads and downloads may take them all)."""
    async def read() -> list[str]:
        limiter = anyio.to_thread.current_default_thread_limiter()
        holders = [object() for _ in range(int(limiter.total_tokens))]
        for holder in holders:
            await limiter.acquire_on_behalf_of(holder)
        try:  # a read that waited for a thread would wait for ever: fail instead
            found = await asyncio.wait_for(JobReads(rt).one(job.id, "http://x", SYSTEM), 60)
        finally:
            for holder in holders:
                limiter.release_on_behalf_of(holder)
        return [i["status"] for i in json.loads(found.body)["items"]]

    return asyncio.run(read())


def test_a_status_read_on_sqlite_is_answered_while_every_server_thread_is_busy(
    tmp_path: Path,
) -> None:
    """The read is made on the event loop's own thread: no hand-off to a thread (and none to
    wait for while uploads and downloads hold them all)."""
    rt = fresh_runtime(tmp_path)
    job = make_job(3)
    rt.repo.create_job(job)
    try:
        assert read_with_no_thread_free(rt, job) == ["queued"] * 3
    finally:
        rt.close()


def test_a_status_read_on_postgresql_is_answered_while_every_server_thread_is_busy(
    tmp_path: Path, postgres_url: str,
) -> None:
    """The event loop sends the query on a connection of its own and waits for the answer
    on its socket: no thread to hand it to."""
    rt = Runtime.from_settings(load_settings(data_dir=tmp_path, database_url=postgres_url,
                                             status_cache_seconds=0), run_migrations=True)
    job = make_job(3)
    rt.repo.create_job(job)
    try:
        assert read_with_no_thread_free(rt, job) == ["queued"] * 3
    finally:
        empty_tables(rt.repo.engine)  # the schema lives for the session: leave it empty
        rt.close()


def test_a_read_of_more_jobs_than_a_moment_of_the_event_loop_is_made_in_a_thread(
    tmp_path: Path,
) -> None:
    rt = fresh_runtime(tmp_path)
    jobs = [make_job(2) for _ in range(LOOP_READ_ROWS // rt.settings.max_files + 1)]
    for job in jobs:
        rt.repo.create_job(job)
    threads: list[int] = []
    real_read = rt.repo.get_jobs_versioned

    def where(job_ids: Sequence[str], *, scope: Scope) -> list[tuple[Job, int]]:
        threads.append(threading.get_ident())
        return real_read(job_ids, scope=scope)

    rt.repo.get_jobs_versioned = where  # type: ignore[method-assign]

    async def read(some: list[Job]) -> tuple[int, int]:
        found = await JobReads(rt).many([j.id for j in some], "http://x", SYSTEM)
        return len(found), threading.get_ident()

    try:
        assert asyncio.run(read(jobs[:1]))[0] == 1
        assert threads == []  # one job: on the event loop, through poll_jobs
        count, loop_thread = asyncio.run(read(jobs))
        assert count == len(jobs)
        assert len(threads) == 1 and threads[0] != loop_thread
    finally:
        rt.close()


def test_a_status_read_on_a_locked_sqlite_database_waits_in_a_thread_not_on_the_event_loop(
    tmp_path: Path,
) -> None:
    rt = fresh_runtime(tmp_path)
    job = make_job(2)
    rt.repo.create_job(job)
    rt.repo.engine.dispose()  # no connection open: the one below can lock everyone out
    holder = exclusive_holder(tmp_path / "imgq.db")

    try:
        ticks, read = asyncio.run(answered_after_unlock(
            holder, JobReads(rt).one(job.id, "http://x", SYSTEM)))
        assert (ticks, read.job_id) == (20, job.id)
    finally:
        holder.close()
        rt.close()
