"""fair claiming: each item's place in its queue's fair order

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fair_key", sa.BigInteger(), nullable=False,
                                      server_default="0"))
        batch_op.create_index("ix_items_status_fair_key", ["status", "fair_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_index("ix_items_status_fair_key")
        batch_op.drop_column("fair_key")
