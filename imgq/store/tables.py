"""SQLAlchemy tables. Only the repository reads and writes them."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import literal_column



class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("pipeline", JSON, nullable=False),
    Column("resource", String(8), nullable=False),
    Column("item_count", Integer, nullable=False),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("data_removed", Boolean, nullable=False, default=False),
    Column("source", String(32), nullable=False, default="api"),
    Column("extra", JSON, nullable=False, default=dict),
    # Whose job it is (imgq.domain.access): key:<id>, anon:<address>; NULL for jobs made
    # before owners existed, which only admin keys see.
    Column("owner", String(80), nullable=True),
    # Bumped by every UPDATE (Core applies onupdate): live event streams diff on it.
    Column("version", Integer, nullable=False, default=0, server_default="0",
           onupdate=literal_column("version") + 1),
    Index("ix_jobs_created_at", "created_at"),
    Index("ix_jobs_expires_at", "expires_at"),
    Index("ix_jobs_owner_created_at", "owner", "created_at"),
)

items = Table(
    "items",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("job_id", String(36), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("progress", Integer, nullable=False, default=0),
    Column("stage", String(200), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("failures", Integer, nullable=False, default=0, server_default="0"),
    Column("lease_losses", Integer, nullable=False, default=0, server_default="0"),
    Column("not_before", UTCDateTime(), nullable=True),
    Column("lease_until", UTCDateTime(), nullable=True),
    Column("claim_token", String(36), nullable=True),
    Column("error_code", String(64), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("queued_at", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime(), nullable=True),
    Column("finished_at", UTCDateTime(), nullable=True),
    Column("processing_seconds", Float, nullable=True),
    Column("input_name", String(300), nullable=False),
    Column("input_key", String(200), nullable=False),
    Column("input_meta", JSON, nullable=False),
    Column("result_name", String(300), nullable=True),
    Column("result_key", String(200), nullable=True),
    Column("result_meta", JSON, nullable=True),
    # The job's owner, copied so claims and quotas need no join.
    Column("owner", String(80), nullable=True),
    Column("version", Integer, nullable=False, default=0, server_default="0",
           onupdate=literal_column("version") + 1),
    # The item's place in its queue's fair order: workers claim the lowest due key first.
    # Each owner's items take consecutive keys from the queue's head (see JobStore.create_job),
    # so a newcomer's item is near the front instead of behind another owner's whole batch.
    Column("fair_key", BigInteger, nullable=False, default=0, server_default="0"),
    # The job's resource class (its queue), copied so that a claim reads one index, with no
    # join to jobs (whose plan, on stale statistics, scanned the jobs table for each item).
    Column("resource", String(8), nullable=False, default="cpu", server_default="cpu"),
    Index("ix_items_job_idx", "job_id", "idx", unique=True),
    Index("ix_items_owner_status", "owner", "status"),
    # The claim's order (claims.py), whole, per queue: the next due item is the first row.
    # It also serves every other read by status (due, lost leases, stuck), so there is no
    # index on status alone: stale statistics made the planner prefer that one and sort the
    # whole queue at each claim, and every index is one more write when an item changes state.
    Index("ix_items_queue_order", "status", "resource", "fair_key", "queued_at", "id"),
)

# The webhook outbox: one row per job with a callback_url, written with the job; the sweeper
# sends it once the job has finished, retrying with backoff until delivered or out of attempts.
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("job_id", String(36), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("url", Text, nullable=False),
    Column("base_url", String(500), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("delivered_at", UTCDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    Index("ix_webhooks_status_next", "status", "next_attempt_at"),
    Index("ix_webhooks_job_id", "job_id"),
)

# Integer task ids of the Image Queue Demo compatibility API: random, not sequential,
# below 2**53 so a JSON number holds them; each names an ordinary imgq job.
compat_tasks = Table(
    "compat_tasks",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("system", String(16), nullable=False),
    Column("job_id", String(36), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("filename", String(300), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_compat_tasks_system_filename", "system", "filename", "created_at"),
    Index("ix_compat_tasks_job_id", "job_id"),
)

# API keys (IMGQ_AUTH=keys): only a SHA-256 digest of each secret is kept. Quota columns left
# NULL take the IMGQ_QUOTA_* defaults.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("admin", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("max_active_items", Integer, nullable=True),
    Column("max_items_per_day", Integer, nullable=True),
    Column("max_stored_bytes", BigInteger, nullable=True),
)

# Items submitted per owner and UTC day, for the daily quota (deleting jobs gives none back).
daily_usage = Table(
    "daily_usage",
    metadata,
    Column("owner", String(80), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("submitted", Integer, nullable=False, default=0),
)

# Idempotency-Key of a submit (POST /v1/jobs and the older APIs' submit routes): the first
# answer, kept for IMGQ_IDEMPOTENCY_TTL_SECONDS per key and client, is the answer to a retry.
# A row without a status is a request still being processed.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("client", String(80), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=True),
    Column("status_code", Integer, nullable=True),
    Column("content_type", String(100), nullable=True),
    Column("location", Text, nullable=True),
    Column("body", LargeBinary, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Index("ix_idempotency_keys_expires_at", "expires_at"),
)
