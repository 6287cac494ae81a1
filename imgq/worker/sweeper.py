"""Periodic upkeep: lost leases, re-dispatch, stuck items, expiry."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from imgq.worker.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    requeued: list[str] = field(default_factory=list)
    lost_failed: list[str] = field(default_factory=list)
    dispatched: int = 0
    stuck_failed: list[str] = field(default_factory=list)
    expired_jobs: list[str] = field(default_factory=list)
    stale_files: int = 0


def requeue_lost(rt: Runtime, report: SweepReport) -> None:
    """Requeue items whose worker stopped answering (or fail those out of attempts)."""
    report.requeued, report.lost_failed = rt.repo.requeue_lost(rt.settings.max_lost_leases)
    if report.requeued:
        log.warning("requeued %d items whose lease ran out", len(report.requeued))


def sweep_expiry(rt: Runtime, report: SweepReport) -> None:
    report.stuck_failed = rt.repo.fail_stuck(rt.settings.stuck_after_seconds)
    # An upload or result older than any item may run was left by a killed process.
    report.stale_files = rt.blobs.sweep_staging(2 * rt.settings.item_time_limit_seconds + 3600)
    for job_id in rt.repo.expired_jobs():
        rt.blobs.delete(rt.repo.blob_keys(job_id))
        rt.repo.mark_expired(job_id)
        report.expired_jobs.append(job_id)
    if report.expired_jobs:
        log.info("expired %d jobs and removed their files", len(report.expired_jobs))


def sweep(rt: Runtime) -> SweepReport:
    """One whole sweep without a dispatcher (`imgq cleanup`)."""
    report = SweepReport()
    requeue_lost(rt, report)
    sweep_expiry(rt, report)
    return report
