"""The archive's tables (SQLAlchemy Core): one row per plan, per task and per plan event.

Every row is keyed on deployer's own ids (planId, taskId, the event's stream id), so writing
a plan again writes the same rows again: archiving is an idempotent upsert, never an append.
Times are milliseconds since the epoch, as in Redis; JSON columns are JSONB on PostgreSQL.
The migrations (deployer/archive/migrations) create exactly these; `tests` compare the two.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, MetaData, String, Table, Text
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

#: JSON that is JSONB on PostgreSQL (indexable, compact) and JSON text elsewhere.
Json = JSON().with_variant(JSONB(), "postgresql")

plans = Table(
    "plans",
    metadata,
    Column("plan_id", String(512), primary_key=True),
    Column("digest", String(128), nullable=False, default=""),
    Column("status", String(32), nullable=False),
    Column("strategy", Json, nullable=True),
    Column("submitted_by", String(200), nullable=False, default=""),
    Column("total", Integer, nullable=False, default=0),
    Column("counts", Json, nullable=False),
    #: The whole plan hash as it was (redacted): waves, budget, gate answers, stop reason.
    Column("fields", Json, nullable=False),
    Column("created_at", BigInteger, nullable=True),
    Column("updated_at", BigInteger, nullable=True),
    Column("ended_at", BigInteger, nullable=True),
    #: Set when every task and event of the plan is in the archive (the last write).
    Column("archived_at", BigInteger, nullable=True),
    Index("ix_plans_created_at", "created_at"),
    Index("ix_plans_status_created_at", "status", "created_at"),
)

tasks = Table(
    "tasks",
    metadata,
    Column("task_id", String(1024), primary_key=True),
    Column("plan_id", String(512), nullable=False),
    Column("tenant_id", String(512), nullable=False),
    Column("plan_version", BigInteger, nullable=True),
    Column("status", String(32), nullable=False),
    Column("run_kind", String(16), nullable=True),
    Column("run_id", String(128), nullable=False, default=""),
    Column("failure_code", String(64), nullable=False, default=""),
    Column("last_error", Text, nullable=False, default=""),
    Column("failed_stage", String(200), nullable=False, default=""),
    #: [{"stage", "event", "ts", ...}] from the plan's events of this tenant, oldest first.
    Column("stages", Json, nullable=False),
    #: The TenantConfig (with its previous snapshot), redacted (deployer/redact.py).
    Column("config", Json, nullable=True),
    #: The other fields of the task hash worth keeping (retries, worker, cancelledBy...).
    Column("fields", Json, nullable=False),
    Column("created_at", BigInteger, nullable=True),
    Column("started_at", BigInteger, nullable=True),
    Column("ended_at", BigInteger, nullable=True),
    Column("updated_at", BigInteger, nullable=True),
    Index("ix_tasks_plan_id", "plan_id"),
    Index("ix_tasks_tenant_created", "tenant_id", "created_at"),
)

events = Table(
    "events",
    metadata,
    Column("plan_id", String(512), primary_key=True),
    #: The stream entry id ("ms-seq"), unique within its plan's stream.
    Column("event_id", String(64), primary_key=True),
    Column("ms", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("type", String(64), nullable=False, default=""),
    Column("tenant_id", String(512), nullable=True),
    Column("fields", Json, nullable=False),
    Index("ix_events_plan_order", "plan_id", "ms", "seq"),
)
