"""Read models of the deployment history: live plans and tasks (Redis, deployer/views.py)
and archived ones (deployer/archive) in one shape, so `deployer plans`, `deployer history`,
`status`, `task`, `events` and the HTTP API answer the same for a plan wherever it lives.

An archived plan or task says so (`"archived": true`) and offers no commands: what it
holds is history. A plan still in Redis wins over its archive copy (it may have moved since).
"""

from __future__ import annotations

import json
from typing import Any

from deployer import views
from deployer.archive.store import Archive
from deployer.isotime import iso
from deployer.models import task_id_for
from deployer.redact import redact
from deployer.state.plans import Plans
from deployer.state.record import Field as F
from deployer.state.record import TaskRecord
from deployer.state.store import Store

#: Live plans read per round trip while filling a filtered page.
_LIVE_CHUNK = 200
#: Live plans looked at for one page at most (the rest: the next page, by its cursor).
_LIVE_SCAN = 5000


def _cursor(cursor: str | None) -> tuple[int, str] | None:
    """'createdAtMs:planId' (or taskId) of the last row of the previous page."""
    if not cursor:
        return None
    ms, _, rest = cursor.partition(":")
    try:
        return int(ms), rest
    except ValueError:
        return None


def _before(row_at: int, row_id: str, cursor: tuple[int, str] | None) -> bool:
    return cursor is None or (row_at, row_id) < cursor


def archived_plan_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "planId": row["plan_id"],
        "status": row["status"],
        "total": row["total"],
        "counts": row["counts"] or {},
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
        "endedAt": iso(row["ended_at"]),
        "archived": True,
        "archivedAt": iso(row["archived_at"]),
    }


def archived_task_row(row: dict[str, Any]) -> dict[str, Any]:
    failure = None
    if row.get("last_error") or row.get("failure_code"):
        failure = {"stage": row.get("failed_stage") or None,
                   "error": row.get("last_error") or None,
                   "code": row.get("failure_code") or None, "at": iso(row["ended_at"])}  # fmt: skip
    return {
        "taskId": row["task_id"],
        "planId": row["plan_id"],
        "tenantId": row["tenant_id"],
        "status": row["status"],
        "planVersion": row["plan_version"],
        "runKind": row["run_kind"],
        "failure": failure,
        "createdAt": iso(row["created_at"]),
        "startedAt": iso(row["started_at"]),
        "endedAt": iso(row["ended_at"]),
        "archived": True,
    }


def archived_plan_view(archive: Archive, plan_id: str, sample: int = 20) -> dict[str, Any] | None:
    """`status P` of an archived plan: the plan row and its first tasks; None if unknown."""
    row = archive.plan(plan_id)
    if row is None:
        return None
    fields = row["fields"] or {}
    out = archived_plan_row(row)
    out.update({
        "maxConcurrency": int(fields.get("maxConcurrency") or 0),
        "control": fields.get("control") or None,
        "digest": row["digest"] or None,
        "strategy": row["strategy"],
        "stopReason": fields.get("stopReason") or None,
        "commands": [],
    })  # fmt: skip
    if sample:
        out["tasks"] = [archived_task_row(t) for t in archive.tasks(plan_id, 0, sample)]
    return redact(out)  # type: ignore[no-any-return]


def archived_task_view(archive: Archive, task_id: str) -> dict[str, Any] | None:
    """`task --plan P --tenant T` of an archived task: what it did, its stage timeline and
    the config it deployed (redacted); None if unknown."""
    row = archive.task(task_id)
    if row is None:
        return None
    out = archived_task_row(row)
    kept = TaskRecord.from_hash(row["fields"] or {})  # the task hash's other fields, as kept
    out.update({
        "runId": row["run_id"] or None,
        "retryCount": kept.retry_count or 0,
        "cancelledBy": kept.cancelled_by or None,
        "supersededBy": kept.superseded_by or None,
        "updatedAt": iso(row["updated_at"]),
        "timeline": [{**e, "ts": iso(e.get("ts"))} for e in row["stages"] or []],
        "config": row["config"],
        "commands": [],
    })  # fmt: skip
    return redact(out)  # type: ignore[no-any-return]


def plan_view(
    store: Store, archive: Archive | None, plan_id: str, sample: int = 20
) -> dict[str, Any] | None:
    """A plan wherever it is: live (Redis) unless archived, else the archive's copy."""
    live = views.plan_view(store, plan_id, sample, live_only=True)
    if live is not None:
        return live
    return archived_plan_view(archive, plan_id, sample) if archive is not None else None


def task_view(
    store: Store, archive: Archive | None, plan_id: str, tenant_id: str
) -> dict[str, Any] | None:
    """A plan's task wherever it is: live while its hash is in Redis, else archived."""
    live = views.plan_task_view(store, plan_id, tenant_id)
    if live is not None:
        return live
    if archive is None:
        return None
    return archived_task_view(archive, task_id_for(plan_id, tenant_id))


def plans_page(
    store: Store,
    archive: Archive | None,
    *,
    status: str | None = None,
    since_ms: int | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Plans live and archived, newest first (by creation), `limit` per page; `nextCursor`
    continues (None at the end). A plan in both places is listed once, live."""
    limit = max(1, min(limit, views.MAX_PAGE))
    after = _cursor(cursor)
    live = _live_plans(store, status, since_ms, after, limit)
    stored = archive.plans(status=status, since_ms=since_ms, before=after,
                           limit=limit + 1) if archive else []  # fmt: skip
    live_ids = {p["planId"] for p in live}
    rows = live + [archived_plan_row(r) for r in stored if r["plan_id"] not in live_ids]
    rows.sort(key=lambda p: (_ms(p["createdAt"]), p["planId"]), reverse=True)
    page = rows[:limit]
    more = len(rows) > limit
    next_cursor = None
    if more and page:
        last = page[-1]
        next_cursor = f"{_ms(last['createdAt'])}:{last['planId']}"
    return {"items": redact(page), "nextCursor": next_cursor}


def _ms(stamp: str | None) -> int:
    from datetime import datetime

    if not stamp:
        return 0
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def _live_plans(
    store: Store,
    status: str | None,
    since_ms: int | None,
    after: tuple[int, str] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Up to limit + 1 live plans before the cursor, newest first, matching the filters."""
    newest: int | str = after[0] if after else "+inf"
    oldest: int | str = since_ms if since_ms is not None else "-inf"
    plans = Plans.of(store)
    out: list[dict[str, Any]] = []
    offset = scanned = 0
    while len(out) <= limit and scanned < _LIVE_SCAN:
        chunk = plans.created_between(newest, oldest, offset, _LIVE_CHUNK)
        if not chunk:
            break
        offset += len(chunk)
        scanned += len(chunk)
        found = plans.get_many([plan_id for plan_id, _ in chunk])
        for (plan_id, created), plan in zip(chunk, found, strict=True):
            if plan is None or not _before(created, plan_id, after):
                continue
            if status and plan.status != status:
                continue
            row = {**views.plan_row(plan_id, plan), "archived": plan.archived_at is not None}
            if plan.archived_at is not None:
                row["archivedAt"] = iso(plan.archived_at)
            out.append(row)
        if len(chunk) < _LIVE_CHUNK:
            break
    return out


def tenant_history(
    store: Store,
    archive: Archive | None,
    tenant_id: str,
    limit: int = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Every deployment of the tenant, live and archived, newest first: planId, taskId,
    status, planVersion, runKind, startedAt, endedAt (and archived). `nextCursor` pages."""
    limit = max(1, min(limit, views.MAX_PAGE))
    after = _cursor(cursor)
    rows: dict[str, tuple[int, dict[str, Any]]] = {}
    for at, row in _live_tasks(store, tenant_id):
        if _before(at, row["taskId"], after):
            rows[row["taskId"]] = (at, row)
    for stored in archive.history(tenant_id, limit + 1, after) if archive else []:
        if stored["task_id"] not in rows:
            row = {k: v for k, v in archived_task_row(stored).items() if k != "failure"}
            rows[stored["task_id"]] = (stored["created_at"] or 0, row)
    ordered = sorted(rows.values(), key=lambda p: (p[0], p[1]["taskId"]), reverse=True)
    page = ordered[:limit]
    next_cursor = None
    if len(ordered) > limit and page:
        at, last = page[-1]
        next_cursor = f"{at}:{last['taskId']}"
    return {
        "tenantId": tenant_id,
        "latestTaskId": store.task_id_for_tenant(tenant_id),
        "items": redact([row for _, row in page]),
        "nextCursor": next_cursor,
    }


_HISTORY_FIELDS = (F.TASK_ID, F.PLAN_ID, F.STATUS, F.RUN_KIND, F.CONFIG, F.CREATED_AT,
                   F.STARTED_AT, F.ENDED_AT)  # fmt: skip


def _live_tasks(store: Store, tenant_id: str) -> list[tuple[int, dict[str, Any]]]:
    """The tenant's tasks still in Redis (in the newest plans), with their creation time."""
    plan_ids = Plans.of(store).newest_ids(views.TENANT_PLAN_SCAN)
    found = store.get_tasks([task_id_for(p, tenant_id) for p in plan_ids], _HISTORY_FIELDS)
    out = []
    for t in found:
        if not t.task_id:
            continue
        version = None
        try:
            version = json.loads(t.config).get("planVersion") if t.config else None
        except (ValueError, AttributeError):
            version = None
        out.append((t.created_at or 0, {
            "taskId": t.task_id,
            "planId": t.plan_id,
            "tenantId": tenant_id,
            "status": t.status.value if t.status else None,
            "planVersion": version if isinstance(version, int) else None,
            "runKind": t.run_kind.value if t.run_kind else None,
            "createdAt": iso(t.created_at),
            "startedAt": iso(t.started_at),
            "endedAt": iso(t.ended_at),
            "archived": False,
        }))  # fmt: skip
    return out


def archived_events(
    archive: Archive, plan_id: str, count: int = 50, tenant_id: str | None = None
) -> list[tuple[str, dict[str, str]]]:
    """The newest `count` archived events of the plan (0: all), oldest first, as stream
    entries (id, fields) so they print like live ones."""
    if count == 0:
        rows = [r for r in archive.iter_events(plan_id)
                if not tenant_id or r["tenant_id"] == tenant_id]  # fmt: skip
    else:
        rows = list(reversed(archive.events(plan_id, count, tenant_id=tenant_id)))
    return [(r["event_id"], {k: str(v) for k, v in (r["fields"] or {}).items()}) for r in rows]
