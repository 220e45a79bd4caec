"""The archive: plans, tasks, events.

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("plan_id", sa.String(512), primary_key=True),
        sa.Column("digest", sa.String(128), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("strategy", Json, nullable=True),
        sa.Column("submitted_by", sa.String(200), nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("counts", Json, nullable=False),
        sa.Column("fields", Json, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=True),
        sa.Column("updated_at", sa.BigInteger, nullable=True),
        sa.Column("ended_at", sa.BigInteger, nullable=True),
        sa.Column("archived_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_plans_created_at", "plans", ["created_at"])
    op.create_index("ix_plans_status_created_at", "plans", ["status", "created_at"])
    op.create_table(
        "tasks",
        sa.Column("task_id", sa.String(1024), primary_key=True),
        sa.Column("plan_id", sa.String(512), nullable=False),
        sa.Column("tenant_id", sa.String(512), nullable=False),
        sa.Column("plan_version", sa.BigInteger, nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("run_kind", sa.String(16), nullable=True),
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("failure_code", sa.String(64), nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("failed_stage", sa.String(200), nullable=False),
        sa.Column("stages", Json, nullable=False),
        sa.Column("config", Json, nullable=True),
        sa.Column("fields", Json, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=True),
        sa.Column("started_at", sa.BigInteger, nullable=True),
        sa.Column("ended_at", sa.BigInteger, nullable=True),
        sa.Column("updated_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_tasks_plan_id", "tasks", ["plan_id"])
    op.create_index("ix_tasks_tenant_created", "tasks", ["tenant_id", "created_at"])
    op.create_table(
        "events",
        sa.Column("plan_id", sa.String(512), primary_key=True),
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("ms", sa.BigInteger, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(512), nullable=True),
        sa.Column("fields", Json, nullable=False),
    )
    op.create_index("ix_events_plan_order", "events", ["plan_id", "ms", "seq"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("tasks")
    op.drop_table("plans")
