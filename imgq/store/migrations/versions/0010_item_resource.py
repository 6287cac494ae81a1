"""items carry their job's resource class: a claim reads one index and joins nothing

The next due item of a queue was found by joining each queued item to its job for the job's
resource. Without fresh statistics (autovacuum off, or a table just filled) PostgreSQL planned
that join as a scan of the jobs table for each item, and the claim's cost grew with the jobs
kept; and it preferred the index on (status, not_before) to the claim order's, then sorted
every queued item. With the resource on the item and in the claim order's index, which serves
the reads by status too (the other index is dropped), the next due item of a queue is the
index's first row.

Revision ID: 0010
Revises: 0009
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch_op:
        batch_op.add_column(sa.Column("resource", sa.String(8), nullable=False,
                                      server_default="cpu"))
    op.execute("UPDATE items SET resource = (SELECT jobs.resource FROM jobs "
               "WHERE jobs.id = items.job_id) WHERE resource <> (SELECT jobs.resource "
               "FROM jobs WHERE jobs.id = items.job_id)")
    with op.batch_alter_table("items") as batch_op:
        batch_op.drop_index("ix_items_claim_order")
        batch_op.drop_index("ix_items_status_not_before")
        batch_op.create_index("ix_items_queue_order",
                              ["status", "resource", "fair_key", "queued_at", "id"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("items") as batch_op:
        batch_op.drop_index("ix_items_queue_order")
        batch_op.create_index("ix_items_status_not_before", ["status", "not_before"],
                              unique=False)
        batch_op.create_index("ix_items_claim_order", ["status", "fair_key", "queued_at", "id"],
                              unique=False)
        batch_op.drop_column("resource")
