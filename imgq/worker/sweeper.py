"""Periodic upkeep: lost leases, re-dispatch, stuck items, expiry."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from dataclasses import dataclass, field

from imgq.store.repository import utcnow
from imgq.worker.runtime import Runtime

log = logging.getLogger(__name__)

#: Seconds without a write after which a staging file is taken for a killed process's leftover.
STAGING_IDLE_SECONDS = 600.0


@dataclass
class SweepReport:
    requeued: list[str] = field(default_factory=list)
    lost_failed: list[str] = field(default_factory=list)
    dispatched: int = 0
    stuck_failed: list[str] = field(default_factory=list)
    expired_jobs: list[str] = field(default_factory=list)
    stale_files: int = 0
    orphaned_results: int = 0


def requeue_lost(rt: Runtime, report: SweepReport) -> None:
    """Requeue items whose worker stopped answering (or fail those out of attempts)."""
    report.requeued, report.lost_failed = rt.repo.requeue_lost(rt.settings.max_lost_leases)
    if report.requeued:
        log.warning("requeued %d items whose lease ran out", len(report.requeued))


def sweep_expiry(rt: Runtime, report: SweepReport) -> None:
    report.stuck_failed = rt.repo.fail_stuck(rt.settings.stuck_after_seconds)
    rt.repo.purge_idempotency_keys()
    # A staging file nobody wrote for a while was left by a killed process (an upload being
    # received or a result being encoded is written to all the time).
    report.stale_files = rt.blobs.sweep_staging(STAGING_IDLE_SECONDS)
    report.orphaned_results = sweep_orphans(rt)
    for job_id in rt.repo.expired_jobs():
        rt.blobs.delete_under(f"{job_id}/")  # every file under it, recorded or not
        rt.repo.mark_expired(job_id)
        report.expired_jobs.append(job_id)
    if report.expired_jobs:
        log.info("expired %d jobs and removed their files", len(report.expired_jobs))


def sweep_orphans(rt: Runtime) -> int:
    """Remove results stored but never recorded (a worker killed between storing and
    recording, or cut off from the database) in the jobs whose items ended lately."""
    s = rt.settings
    since = utcnow() - timedelta(seconds=2 * s.sweep_interval_seconds + s.lease_seconds)
    # A result stored this moment is recorded within seconds; one older than this never will be.
    settled = time.time() - (s.lease_seconds + 60)
    removed = 0
    for job_id, recorded in rt.repo.recent_results(since).items():
        stray = [key for key, written in rt.blobs.listing(f"{job_id}/results")
                 if key not in recorded and written < settled]
        if stray:
            rt.blobs.delete(stray)
            removed += len(stray)
    if removed:
        log.info("removed %d stored results that no item recorded", removed)
    return removed


def sweep(rt: Runtime) -> SweepReport:
    """One whole sweep without a dispatcher (`imgq cleanup`)."""
    report = SweepReport()
    requeue_lost(rt, report)
    sweep_expiry(rt, report)
    return report
