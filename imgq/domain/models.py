"""Jobs and items as the rest of the code sees them (plain records, no database types)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from imgq.domain.status import TERMINAL, JobStatus, Status, derive_job_status


@dataclass
class Item:
    id: str
    job_id: str
    idx: int
    status: Status
    input_name: str
    input_key: str
    input_meta: dict[str, Any]
    queued_at: datetime
    progress: int = 0
    stage: str | None = None
    attempts: int = 0  # times a worker started it
    failures: int = 0  # attempts spent on the image's account (IMGQ_MAX_ATTEMPTS)
    lease_losses: int = 0  # times its worker stopped answering (IMGQ_MAX_LOST_LEASES)
    not_before: datetime | None = None
    lease_until: datetime | None = None
    claim_token: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    processing_seconds: float | None = None
    result_name: str | None = None
    result_key: str | None = None
    result_meta: dict[str, Any] | None = None


@dataclass
class Job:
    id: str
    created_at: datetime
    expires_at: datetime
    pipeline: list[dict[str, Any]]
    resource: str
    item_count: int
    cancel_requested: bool = False
    data_removed: bool = False
    source: str = "api"
    extra: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None  # imgq.domain.access: key:<id>, anon:<address>
    items: list[Item] = field(default_factory=list)

    @property
    def status(self) -> JobStatus:
        return derive_job_status(i.status for i in self.items)

    @property
    def progress(self) -> int:
        if not self.items:
            return 0
        return round(sum(100 if i.status in TERMINAL else i.progress for i in self.items) / len(self.items))




@dataclass(frozen=True)
class Claim:
    """A running item as its worker holds it: the token proves the claim is still ours."""

    item: Item
    job: Job
    token: str
