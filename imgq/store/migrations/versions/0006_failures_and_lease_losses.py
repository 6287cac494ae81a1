"""attempts spent on the image's account apart from lost leases and infrastructure retries

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failures", sa.Integer(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("lease_losses", sa.Integer(), nullable=False,
                                      server_default="0"))
    # Items that already ran counted every start as an attempt; keep that count.
    op.execute("UPDATE items SET failures = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END")


def downgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_column("lease_losses")
        batch_op.drop_column("failures")
