"""The claim's whole order in one index: a claim reads the first due item, not every queued one

The next item of a queue is the first queued one by (fair_key, queued_at, id). With an index on
(status, fair_key) only, PostgreSQL sorted every queued item of the queue at each claim (and,
without fresh statistics, joined each to its job by a scan of the jobs table): a claim cost
grew with the queue. With the whole order in the index, it reads the first rows and stops.

Revision ID: 0009
Revises: 0008
"""
from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch_op:
        batch_op.drop_index("ix_items_status_fair_key")
        batch_op.create_index("ix_items_claim_order", ["status", "fair_key", "queued_at", "id"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("items") as batch_op:
        batch_op.drop_index("ix_items_claim_order")
        batch_op.create_index("ix_items_status_fair_key", ["status", "fair_key"], unique=False)
