"""Live event streams on one job share one database poll, on the real repository (SQLite)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from imgq.api.job_watch import JobWatches
from imgq.config import load_settings
from imgq.domain.access import SYSTEM, Scope
from imgq.worker.runtime import Runtime
from tests.contract.conftest import make_job

STREAMS = 200


def test_two_hundred_followers_of_one_job_cost_one_poll_and_all_see_each_change(
    tmp_path: Path,
) -> None:
    rt = Runtime.from_settings(load_settings(data_dir=tmp_path, events_poll_interval_seconds=0.05),
                               run_migrations=True)
    job = make_job(2)
    rt.repo.create_job(job)
    reads: list[str] = []
    real_version = rt.repo.job_version

    def counted(job_id: str, *, scope: Scope) -> int | None:
        reads.append(job_id)
        return real_version(job_id, scope=scope)

    rt.repo.job_version = counted  # type: ignore[method-assign]
    first = rt.repo.job_snapshot(job.id, scope=SYSTEM)
    assert first is not None

    async def follow(watches: JobWatches, started: asyncio.Event) -> int:
        async with watches.follow(job.id, *first) as watch:
            started.set()
            while watch.version == first[1]:
                await watch.wait(5.0)
            return watch.version

    async def scenario() -> list[int]:
        watches = JobWatches(rt)
        flags = [asyncio.Event() for _ in range(STREAMS)]
        tasks = [asyncio.create_task(follow(watches, f)) for f in flags]
        await asyncio.gather(*(f.wait() for f in flags))
        await asyncio.sleep(0.5)  # about ten poll intervals with every follower waiting
        polls = len(reads)
        assert 3 <= polls <= 20, f"{polls} reads of the job's version for {STREAMS} followers"
        await asyncio.to_thread(lambda: rt.repo.cancel_job(job.id, scope=SYSTEM))
        versions = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert watches.streams_on(job.id) == 0, "the watch outlived its last follower"
        return versions

    try:
        versions = asyncio.run(scenario())
        final = rt.repo.job_snapshot(job.id, scope=SYSTEM)
    finally:
        rt.close()
    assert final is not None and set(versions) == {final[1]}
