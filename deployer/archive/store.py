"""The archive's reads and writes: idempotent upserts of plans, tasks and events, and the
queries behind `deployer plans`, `deployer history`, and the archived answers of `status`,
`task` and `events`.

Rows are plain dicts of column values (deployer/archive/schema.py); what they hold is built
from Redis by deployer/retention.py. Nothing here knows Redis.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, and_, func, or_, select, update
from sqlalchemy.engine import Connection

from deployer.archive import schema
from deployer.archive.db import archive_url, engine_for
from deployer.settings import Settings

#: Rows per INSERT ... ON CONFLICT statement (well under SQLite's bound on variables).
WRITE_BATCH = 500


def _insert(conn: Connection, table: Table) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def upsert(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert `rows`, or overwrite the rows with the same primary key: writing the same plan
    twice (a re-run after a crash) leaves one copy of each row."""
    if not rows:
        return
    key = [c.name for c in table.primary_key.columns]
    for start in range(0, len(rows), WRITE_BATCH):
        stmt = _insert(conn, table)
        stmt = stmt.on_conflict_do_update(
            index_elements=key,
            set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in key},
        )
        conn.execute(stmt, list(rows[start : start + WRITE_BATCH]))


def _plan_out(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


class Archive:
    """The deployment history in SQL (SQLite or PostgreSQL), opened from the settings."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, settings: Settings) -> Archive:
        return cls(engine_for(archive_url(settings)))

    @classmethod
    def open_existing(cls, settings: Settings) -> Archive | None:
        """The archive for reading, None when the embedded SQLite file was never created
        (nothing archived yet): a read never creates a database as a side effect."""
        url = archive_url(settings)
        if url.startswith("sqlite") and "///" in url:
            path = url.split("///", 1)[1]
            if path != ":memory:" and not Path(path).exists():
                return None
        return cls(engine_for(url))

    # ---- writes ----------------------------------------------------------------------------

    def write(
        self,
        plan: dict[str, Any] | None = None,
        tasks: Sequence[dict[str, Any]] = (),
        events: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Upsert rows in one transaction (committed when this returns)."""
        with self.engine.begin() as conn:
            upsert(conn, schema.events, events)
            upsert(conn, schema.tasks, tasks)
            if plan is not None:
                upsert(conn, schema.plans, [plan])

    def mark_archived(self, plan_id: str, at_ms: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(schema.plans)
                .where(schema.plans.c.plan_id == plan_id)
                .values(archived_at=at_ms)
            )

    # ---- reads -----------------------------------------------------------------------------

    def plan(self, plan_id: str) -> dict[str, Any] | None:
        """The plan's row, or None (not archived, or its archiving never finished)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(schema.plans).where(
                    schema.plans.c.plan_id == plan_id, schema.plans.c.archived_at.is_not(None)
                )
            ).first()
        return _plan_out(row) if row else None

    def plans(
        self,
        *,
        status: str | None = None,
        since_ms: int | None = None,
        before: tuple[int, str] | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Archived plans newest first (created_at, then plan id); `before` = the
        (created_at, plan_id) of the last row of the previous page."""
        p = schema.plans.c
        query = select(schema.plans).where(p.archived_at.is_not(None))
        if status:
            query = query.where(p.status == status)
        if since_ms is not None:
            query = query.where(p.created_at >= since_ms)
        if before is not None:
            at, pid = before
            query = query.where(or_(p.created_at < at, and_(p.created_at == at, p.plan_id < pid)))
        query = query.order_by(p.created_at.desc(), p.plan_id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [_plan_out(r) for r in conn.execute(query)]

    def plan_ids(self, plan_ids: Iterable[str]) -> set[str]:
        """Which of `plan_ids` are archived (complete)."""
        ids = list(plan_ids)
        if not ids:
            return set()
        p = schema.plans.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(p.plan_id).where(p.plan_id.in_(ids), p.archived_at.is_not(None))
            )
            return {str(r[0]) for r in rows}

    def tasks(self, plan_id: str, offset: int = 0, limit: int = 50) -> list[dict[str, Any]]:
        """A page of the plan's archived tasks, by tenant id."""
        t = schema.tasks.c
        query = (
            select(schema.tasks)
            .where(t.plan_id == plan_id)
            .order_by(t.tenant_id)
            .offset(offset)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def task_count(self, plan_id: str) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(func.count())
                .select_from(schema.tasks)
                .where(schema.tasks.c.plan_id == plan_id)
            ).scalar()
        return int(value or 0)

    def task(self, task_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(schema.tasks).where(schema.tasks.c.task_id == task_id)
            ).first()
        return dict(row._mapping) if row else None

    def history(
        self, tenant_id: str, limit: int = 50, before: tuple[int, str] | None = None
    ) -> list[dict[str, Any]]:
        """The tenant's archived tasks, newest first (created_at, then task id)."""
        t = schema.tasks.c
        cols = (t.plan_id, t.task_id, t.tenant_id, t.status, t.plan_version, t.run_kind,
                t.failure_code, t.created_at, t.started_at, t.ended_at)  # fmt: skip
        query = select(*cols).where(t.tenant_id == tenant_id)
        if before is not None:
            at, tid = before
            query = query.where(or_(t.created_at < at, and_(t.created_at == at, t.task_id < tid)))
        query = query.order_by(t.created_at.desc(), t.task_id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def events(
        self, plan_id: str, limit: int = 50, before: str | None = None, tenant_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The plan's archived events, newest first; `before` an entry id (exclusive)."""
        e = schema.events.c
        query = select(schema.events).where(e.plan_id == plan_id)
        if tenant_id:
            query = query.where(e.tenant_id == tenant_id)
        if before:
            ms, _, seq = before.partition("-")
            at, n = int(ms), int(seq or 0)
            query = query.where(or_(e.ms < at, and_(e.ms == at, e.seq < n)))
        query = query.order_by(e.ms.desc(), e.seq.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def iter_events(self, plan_id: str, chunk: int = 1000) -> Iterator[dict[str, Any]]:
        """Every archived event of the plan, oldest first, `chunk` rows per query."""
        e = schema.events.c
        after: tuple[int, int] | None = None
        while True:
            query = select(schema.events).where(e.plan_id == plan_id)
            if after is not None:
                query = query.where(or_(e.ms > after[0], and_(e.ms == after[0], e.seq > after[1])))
            query = query.order_by(e.ms, e.seq).limit(chunk)
            with self.engine.connect() as conn:
                rows = [dict(r._mapping) for r in conn.execute(query)]
            yield from rows
            if len(rows) < chunk:
                return
            after = (rows[-1]["ms"], rows[-1]["seq"])

    def iter_tasks(self, plan_id: str, chunk: int = 1000) -> Iterator[dict[str, Any]]:
        """Every archived task of the plan, by task id, `chunk` rows per query."""
        t = schema.tasks.c
        after = ""
        while True:
            query = (
                select(schema.tasks)
                .where(t.plan_id == plan_id, t.task_id > after)
                .order_by(t.task_id)
                .limit(chunk)
            )
            with self.engine.connect() as conn:
                rows = [dict(r._mapping) for r in conn.execute(query)]
            yield from rows
            if len(rows) < chunk:
                return
            after = rows[-1]["task_id"]

    def counts(self) -> dict[str, int]:
        """Rows per table (for `deployer archive` and the benchmark)."""
        out: dict[str, int] = {}
        with self.engine.connect() as conn:
            for table in (schema.plans, schema.tasks, schema.events):
                out[table.name] = int(
                    conn.execute(select(func.count()).select_from(table)).scalar() or 0
                )
        return out
