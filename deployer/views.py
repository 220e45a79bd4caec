"""Read models: the JSON an operator reads for a plan, a task, a page of tasks or of plans.

One module so `deployer status/task --json`, the HTTP API and the dashboard say the same
thing in the same types: numbers as numbers, timestamps as ISO-8601 (UTC), the live progress
text, and only the current run's failure (a retried or rolled-back task keeps the hash field
`failedStage` of its earlier run; it is not shown as if the current run had failed).

Every read is bounded: a plan of 100,000 tenants is read a page at a time (a cursor is a
position in the plan's tenant list), filters scan at most `SCAN_LIMIT` tasks per request and
answer where to continue.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from deployer.isotime import iso
from deployer.lifecycle import Command, Effect, decide
from deployer.models import TaskStatus, task_id_for
from deployer.redact import redact
from deployer.redis_client import client_for
from deployer.state.plans import PlanField, PlanRecord, Plans, written_config
from deployer.state.record import Field as F
from deployer.state.record import TaskRecord
from deployer.state.store import Store
from deployer.waves import rollout_view, waves_of

#: Tasks a filtered page may look at per request before it answers with a cursor.
SCAN_LIMIT = 5_000
MAX_PAGE = 500
#: Plans looked at when listing a tenant's tasks (newest first).
TENANT_PLAN_SCAN = 2000

FAILING = frozenset({TaskStatus.FAILED, TaskStatus.ROLLBACK_FAILED})
#: What a row of a task table reads of each task hash.
ROW_FIELDS = (F.TASK_ID, F.TENANT_ID, F.STATUS, F.STAGE_NAME, F.STAGE_INDEX, F.TOTAL_STAGES,
              F.PROGRESS, F.LAST_ERROR, F.FAILED_STAGE, F.FAILURE_CODE,
              F.UPDATED_AT, F.WAVE)  # fmt: skip


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def counts(plan: PlanRecord) -> dict[str, int]:
    """Tasks per status, from the plan's counters (only the non-zero ones)."""
    return {s.value: n for s, n in plan.counts.items()}


def failure(task: TaskRecord) -> dict[str, Any] | None:
    """The current run's failure, or None. Retry and rollback clear `lastError` when they
    start a run, so a non-empty `lastError` always belongs to the run the task is on."""
    if not task.last_error:
        return None
    return {
        "stage": task.failed_stage or None,
        "error": task.last_error,
        # a deployer.errors.Code (None for a task failed before codes were stored)
        "code": task.failure_code or None,
        "at": iso(task.ended_at),
    }


def progress(task: TaskRecord) -> str | None:
    """The live progress text ("waiting for the tenant lease", "1/2 instances at v20")
    while the task is in flight; None once it finished."""
    return (task.progress or None) if task.in_flight else None


def _status(task: TaskRecord) -> str | None:
    return task.status.value if task.status else None


def task_row(task: TaskRecord) -> dict[str, Any]:
    """One line of a task table (from ROW_FIELDS)."""
    return {
        "taskId": task.task_id or None,
        "tenantId": task.tenant_id or None,
        "status": _status(task),
        "stageName": task.stage_name or None,
        "stageIndex": task.stage_index,
        "totalStages": task.total_stages,
        "progress": progress(task),
        "failure": failure(task),
        "updatedAt": iso(task.updated_at),
        # a plan with a strategy: the wave the tenant is in (None otherwise)
        "wave": task.wave,
    }


def waves(plan: PlanRecord) -> list[dict[str, Any]] | None:
    """Per-wave progress when the plan has a strategy (deployer/waves.py reads the plan
    hash: [{"index", "state", "tenants", "done", "failed", ...}]); else None."""
    return waves_of(plan) if plan.has_strategy else None


#: Effects of a command that change something (an ALREADY is legal but does nothing).
_ACTS = (Effect.NOW, Effect.REQUEST, Effect.WITHDRAW)
PLAN_COMMANDS = ("pause", "resume", "cancel", "retry", "rollback", "approve", "promote", "budget")
TASK_COMMANDS = ("pause", "resume", "cancel", "retry", "rollback")


def plan_commands(plan: PlanRecord) -> list[str]:
    """The commands that would act on the plan now, from its counters, flag and waves (what
    the dashboard offers: no Pause on a finished plan, Approve only while a wave awaits
    approval). A command left out would be refused or change nothing."""
    by_status = plan.counts

    def acts(command: Command) -> bool:
        return any(n and decide(command, s).effect in _ACTS for s, n in by_status.items())

    control = plan.control or None
    rolling = plan.pending_rollback
    live = sum(by_status.get(s, 0) for s in (TaskStatus.PENDING, TaskStatus.RUNNING,
                                             TaskStatus.ROLLING_BACK))  # fmt: skip
    out: list[str] = []
    if control not in ("PAUSE", "CANCEL") and live and not rolling:
        out.append("pause")
    if (control == "PAUSE" and not rolling) or by_status.get(TaskStatus.PAUSED):
        out.append("resume")
    if control != "CANCEL" and acts(Command.CANCEL):
        out.append("cancel")
    if acts(Command.RETRY):
        out.append("retry")
    if not rolling and acts(Command.ROLLBACK):
        out.append("rollback")
    if plan.has_strategy and not rolling:
        state = plan.wave_state
        if state == "AWAITING_APPROVAL":
            out.append("approve")
        if state in ("RUNNING", "BAKING") and (plan.bake_ms or 0) > 0 and not plan.promote_all:
            out.append("promote")
        if plan.budget_max is not None and state not in ("DONE", "HALTED"):
            out.append("budget")
    return out


def task_commands(task: TaskRecord) -> list[str]:
    """The commands that would act on this task now (its page's buttons)."""
    if task.status is None:
        return []
    control = task.control or None
    return [c for c in TASK_COMMANDS if decide(Command(c), task.status, control).effect in _ACTS]


def plan_view(
    store: Store, plan_id: str, sample: int = 20, *, live_only: bool = False
) -> dict[str, Any] | None:
    """`deployer status P --json` and `GET /api/v1/plans/{planId}`; None if unknown (and,
    with `live_only`, when retention marked the plan archived: its archive copy answers).
    Two round trips: the plan with its first task ids, then those tasks' rows."""
    plan, ids = Plans.of(store).get_with_task_ids(plan_id, sample)
    if plan is None or (live_only and plan.archived_at is not None):
        return None
    out: dict[str, Any] = {
        "planId": plan_id,
        "status": plan.status or None,
        "maxConcurrency": plan.max_concurrency or 0,
        "total": plan.total or 0,
        "counts": counts(plan),
        "control": plan.control or None,
        "createdAt": iso(plan.created_at),
        "updatedAt": iso(plan.updated_at),
    }
    # a plan with a strategy: "strategy", "waves" [{"index", "state", "tenants", "done",
    # "failed", ...}], "wave", "waveState", "bakeUntil", "budget", "gate", "stopReason"
    out.update(rollout_view(plan))
    if plan.job:
        out["commandInProgress"] = plan.job
    out["commands"] = plan_commands(plan)
    if sample:
        out["tasks"] = [task_row(t) for t in store.get_tasks(ids, ROW_FIELDS)]
    return redact(out)  # type: ignore[no-any-return]


def _stages(task: TaskRecord) -> list[dict[str, Any]]:
    """The current run's stages with where the task is: done, current, failed, pending."""
    names: list[str] = []
    try:
        run = task.run_model()
    except ValueError:
        run = None
    if run is not None:
        names = [s.name for s in run.stages]
    total = task.total_stages or len(names)
    names += [""] * (total - len(names))
    checkpoint = task.last_checkpoint
    current = task.stage_index
    status = task.status
    out = []
    for i, name in enumerate(names):
        if i <= checkpoint:
            state = "DONE"
        elif i == current and status in FAILING and task.last_error:
            state = "FAILED"
        elif i == current and status not in (TaskStatus.PENDING, None):
            state = "PAUSED" if status is TaskStatus.PAUSED else "CURRENT"
        else:
            state = "PENDING"
        if status in (TaskStatus.COMPLETED, TaskStatus.ROLLED_BACK):
            state = "DONE"
        out.append({"index": i, "name": name or None, "state": state})
    return out


#: What `task_view` shows of a task hash, in this order (a text field only when non-empty,
#: a number or time only when readable).
_SHOWN: tuple[tuple[str, Callable[[TaskRecord], Any]], ...] = (
    ("taskId", lambda t: t.task_id or None),
    ("planId", lambda t: t.plan_id or None),
    ("tenantId", lambda t: t.tenant_id or None),
    ("status", _status),
    ("runKind", lambda t: t.run_kind.value if t.run_kind else None),
    ("runId", lambda t: t.run_id or None),
    ("stageName", lambda t: t.stage_name or None),
    ("progress", lambda t: t.progress or None),
    ("cancelledBy", lambda t: t.cancelled_by or None),
    ("supersededBy", lambda t: t.superseded_by or None),
    ("worker", lambda t: t.worker or None),
    ("control", lambda t: t.control or None),
    ("wave", lambda t: t.wave),
    ("stageIndex", lambda t: t.stage_index),
    ("totalStages", lambda t: t.total_stages),
    ("checkpoint", lambda t: t.checkpoint),
    ("retryCount", lambda t: t.retry_count),
    ("redeliveries", lambda t: t.redeliveries),
    ("createdAt", lambda t: iso(t.created_at)),
    ("dispatchedAt", lambda t: iso(t.dispatched_at)),
    ("startedAt", lambda t: iso(t.started_at)),
    ("endedAt", lambda t: iso(t.ended_at)),
    ("updatedAt", lambda t: iso(t.updated_at)),
)


def task_view(
    store: Store, task_id: str, *, with_hash: bool = True, with_context: bool = True
) -> dict[str, Any] | None:
    """`deployer task --json` and `GET /api/v1/tasks/{taskId}`; None if unknown."""
    task = store.get_task(task_id)
    if task is None:
        return None
    out: dict[str, Any] = {}
    for name, read in _SHOWN:
        value = read(task)
        if value is not None:
            out[name] = value
    out["progress"] = progress(task)
    out["failure"] = failure(task)
    out["stages"] = _stages(task)
    out["commands"] = task_commands(task)
    out["unrestored"] = unrestored(task)
    if with_context:
        # None until the task is first sent: its run and context are built then
        out["context"] = json.loads(task.ctx) if task.ctx else None
        if out["context"]:
            out["context"].pop("token", None)  # the fence token is never shown
    if with_hash and task.tenant_id:
        out["hash"] = config_hash(store, task.tenant_id)
    return redact(out)  # type: ignore[no-any-return]


def unrestored(task: TaskRecord) -> list[dict[str, str]]:
    """The services the current run (a rollback) cannot restore, each with why ([]: none,
    or not a rollback)."""
    try:
        run = task.run_model()
    except ValueError:
        return []
    return [u.wire() for u in run.unrestored] if run is not None else []


def config_hash(store: Store, tenant_id: str) -> dict[str, str] | None:
    """The tenant's written config, on the target Redis where the runs write it and the
    services read it (DEPLOYER_TARGET_REDIS_URL; the state Redis unless set); None when its
    key is not a hash (a write failed on it)."""
    s = store.settings
    target = None if s.target_url == s.state_url else client_for(s.target_url)
    return written_config(store, tenant_id, target)


def latest_task_view(store: Store, tenant_id: str) -> dict[str, Any] | None:
    """The tenant's latest task (what `deployer task --tenant T` shows)."""
    task_id = store.task_id_for_tenant(tenant_id)
    return task_view(store, task_id) if task_id else None


def plan_task_view(store: Store, plan_id: str, tenant_id: str) -> dict[str, Any] | None:
    return task_view(store, task_id_for(plan_id, tenant_id))


def _cursor(cursor: str | int | None) -> int:
    value = _int(cursor)
    return max(0, value) if value is not None else 0


def task_page(
    store: Store,
    plan_id: str,
    *,
    status: str | None = None,
    search: str | None = None,
    limit: int = 50,
    cursor: str | int | None = None,
    scan_limit: int = SCAN_LIMIT,
    wave: int | None = None,
) -> dict[str, Any]:
    """A page of a plan's tasks in submission order (`wave`: of that wave's tasks, in the
    wave's order), optionally only one status and/or tenant ids containing `search`.

    The cursor is a position in the plan's (or the wave's) tenant list. Unfiltered pages
    read exactly `limit` tasks; filtered pages scan at most `scan_limit` tasks server-side
    (one read-only script, lua/task_scan.lua), so a rare status in a huge plan answers
    quickly with fewer items and a `nextCursor` to continue from.
    `nextCursor` is None at the end of the plan.
    """
    limit = max(1, min(limit, MAX_PAGE))
    start = _cursor(cursor)
    plans = Plans.of(store)
    if not status and not search:
        ids, total = plans.task_id_page(plan_id, start, limit, wave)
        items = [task_row(t) for t in store.get_tasks(ids, ROW_FIELDS)]
        return _page(items, start + len(ids), total, scanned=len(ids))
    scan = plans.scan_task_ids(plan_id, start, scan_limit, limit, status=status or "",
                               search=(search or "").lower(), wave=wave)  # fmt: skip
    full = store.get_tasks(scan.task_ids, ROW_FIELDS) if scan.task_ids else []
    return _page([task_row(t) for t in full], scan.position, scan.total,
                 scanned=scan.position - start)  # fmt: skip


def wave_count(store: Store, plan_id: str) -> int | None:
    """How many waves the plan has (0 without a strategy); None when there is no plan."""
    plan = Plans.of(store).fields(plan_id, PlanField.WAVES)
    return None if plan is None else plan.waves or 0


def wave_page(
    store: Store,
    plan_id: str,
    wave: int,
    *,
    status: str | None = None,
    search: str | None = None,
    limit: int = 50,
    cursor: str | int | None = None,
) -> dict[str, Any]:
    """Which tenants are in wave `wave` (fixed at submit), a page at a time, with the wave
    itself (`deployer status P --wave N`, `GET /api/v1/plans/{P}/waves/{N}/tenants`)."""
    page = task_page(store, plan_id, status=status, search=search, limit=limit, cursor=cursor,
                     wave=wave)  # fmt: skip
    plan = Plans.of(store).get(plan_id)
    all_waves = (waves(plan) if plan is not None else None) or []
    page["wave"] = all_waves[wave] if 0 <= wave < len(all_waves) else None
    return page


def _page(items: list[dict[str, Any]], end: int, total: int, scanned: int) -> dict[str, Any]:
    return {
        "items": redact(items),
        "nextCursor": str(end) if end < total else None,
        "total": total,
        "scanned": scanned,
    }


def plan_row(plan_id: str, plan: PlanRecord) -> dict[str, Any]:
    """One line of a plan table (`deployer plans`, `GET /api/v1/plans`)."""
    return {
        "planId": plan_id,
        "status": plan.status or None,
        "total": plan.total or 0,
        "counts": counts(plan),
        "createdAt": iso(plan.created_at),
        "updatedAt": iso(plan.updated_at),
    }


def plans_page(store: Store, limit: int = 50, cursor: str | int | None = None) -> dict[str, Any]:
    """Plans newest first; the cursor is a position in that order."""
    limit = max(1, min(limit, MAX_PAGE))
    start = _cursor(cursor)
    plans = Plans.of(store)
    ids, total = plans.newest(start, limit)
    found = zip(ids, plans.get_many(ids), strict=True)
    items = [plan_row(plan_id, plan) for plan_id, plan in found if plan is not None]
    end = start + len(ids)
    return {"items": redact(items), "nextCursor": str(end) if end < total else None, "total": total}


def tenant_tasks(store: Store, tenant_id: str, scan: int = TENANT_PLAN_SCAN) -> dict[str, Any]:
    """Every task of the tenant among the newest `scan` plans, newest plan first, and
    which one is the tenant's latest (the one commands without a plan act on)."""
    plan_ids = Plans.of(store).newest_ids(scan)
    task_ids = [task_id_for(p, tenant_id) for p in plan_ids]
    rows = store.get_tasks(task_ids, (F.PLAN_ID, *ROW_FIELDS)) if task_ids else []
    latest = store.task_id_for_tenant(tenant_id)
    items = [
        {**task_row(row), "planId": row.plan_id or None, "latest": row.task_id == latest}
        for row in rows
        if row.task_id
    ]
    return {"tenantId": tenant_id, "latestTaskId": latest, "items": redact(items)}
