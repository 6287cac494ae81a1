"""The Image Queue Demo's integer task ids are kept under its name, not an internal label

Revision ID: 0008
Revises: 0007
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TASKS = sa.table("compat_tasks", sa.column("system", sa.String))


def upgrade() -> None:
    op.execute(TASKS.update().where(TASKS.c.system == "seed002").values(system="queue_demo"))


def downgrade() -> None:
    op.execute(TASKS.update().where(TASKS.c.system == "queue_demo").values(system="seed002"))
