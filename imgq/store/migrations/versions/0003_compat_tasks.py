"""integer task ids of the Image Queue Demo compatibility API

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "compat_tasks",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("system", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("filename", sa.String(length=300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("compat_tasks", schema=None) as batch_op:
        batch_op.create_index("ix_compat_tasks_system_filename",
                              ["system", "filename", "created_at"], unique=False)
        batch_op.create_index("ix_compat_tasks_job_id", ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("compat_tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_compat_tasks_job_id")
        batch_op.drop_index("ix_compat_tasks_system_filename")
    op.drop_table("compat_tasks")
