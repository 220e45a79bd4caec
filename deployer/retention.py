"""Retention: finished plans leave Redis for the archive, a bounded slice at a time.

A plan is due when it has ended (status COMPLETED, FAILED, CANCELLED or ROLLED_BACK, no task
pending, running, paused or rolling back), nothing is in progress for it (no plan command's
job, no due timer, no approval or rollback pending, not being created) and it has not
changed for `DEPLOYER_RETENTION_SECONDS`. For such a plan, under a lock of its own
(`deployer:plan:{P}:archiving`, one worker at a time):

1. its plan hash, every task hash and every event of its stream are written to the archive
   (deployer/archive; idempotent upserts) and committed, the plan row last;
2. lua/archive_mark.lua marks the plan archived in Redis, if it is still what was written;
3. lua/archive_drop.lua removes it `retention_slice` tasks per script (never a long one):
   task hashes, the tenants' event references to it, then its stream, queue, waves, job keys
   and the plan hash itself. Each tenant's newest task stays live (rollback, diff and the
   superseded rule read it), and with it a small plan hash, until a newer task replaces it.

A worker killed anywhere leaves the Redis copy, or both copies: before the mark, Redis is
untouched and the next pass writes the same rows again; after it, the next pass (once the
lock lapses) goes on removing. Nothing is removed before its archive copy is committed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import redis

from deployer.models import TaskStatus
from deployer.redact import mask_patterns, redact
from deployer.settings import Settings
from deployer.state.plans import PlanField, PlanRecord
from deployer.state.record import Field, TaskRecord
from deployer.state.retained import DropSlice, DropVerdict, MarkVerdict, RetainedPlans
from deployer.state.store import Store, now_ms

if TYPE_CHECKING:  # SQLAlchemy loads only when a pass has a plan to archive: it costs the
    # worker's main process ≈ 10 MB, which its memory bound (tests/e2e/test_memory.py) counts
    from deployer.archive import Archive

log = logging.getLogger("deployer.retention")

ENDED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "ROLLED_BACK"})
#: Statuses of a task not finished: a plan with one in them is not due.
LIVE = (TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.PAUSED, TaskStatus.ROLLING_BACK)
#: Task-hash fields not kept in a task row's `fields` (kept elsewhere, or secrets/plumbing).
_NOT_KEPT = frozenset(
    f.value
    for f in (
        Field.CONFIG,
        Field.RUN,
        Field.CTX,
        Field.TOKEN,
        Field.CURSOR,
        Field.SLOT,
        Field.LAST_ERROR,
    )
)
#: Plan fields read to decide whether a plan is due (with the counters of `LIVE`).
_DUE_FIELDS = (PlanField.STATUS, PlanField.JOB, PlanField.PENDING_ROLLBACK, PlanField.UPDATED_AT,
               PlanField.ARCHIVED_AT, PlanField.ARCHIVING, PlanField.KEPT_CHECKED_AT)  # fmt: skip
#: Plans read per pipeline while looking for due ones.
_SCAN_PAGE = 500
#: Events and tasks read from Redis (and written to the archive) per batch.
_BATCH = 500


def failure_reason(exc: BaseException) -> str:
    """The `reason` label of a failed pass: `archive` (the archive database refused or is
    unreachable), `redis` (the state store), else `error`."""
    if isinstance(exc, redis.RedisError):
        return "redis"
    module = type(exc).__module__
    if module.startswith(("sqlalchemy", "psycopg", "sqlite3", "alembic")) or isinstance(
        exc, OSError
    ):
        return "archive"
    return "error"


@dataclass
class PassReport:
    """What one retention pass did (or, dry, would do)."""

    archived: list[str] = field(default_factory=list)
    tasks_archived: int = 0
    events_archived: int = 0
    tasks_removed: int = 0
    tasks_kept: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    #: The longest single Redis script or pipeline of the pass, seconds.
    longest_slice: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "archived": self.archived,
            "tasksArchived": self.tasks_archived,
            "eventsArchived": self.events_archived,
            "tasksRemoved": self.tasks_removed,
            "tasksKept": self.tasks_kept,
            "skipped": self.skipped,
            "longestSliceMs": round(self.longest_slice * 1000, 2),
        }


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def due_reason(plan: PlanRecord, cutoff_ms: int, newest_plan_ms: int) -> str | None:
    """None when the plan (its `_DUE_FIELDS` and `LIVE` counters) is due now, else why not.

    An archived plan that kept some tasks live is due again when it changed since (a
    rollback of a kept task) or a newer plan may have replaced one of its tasks."""
    if plan.archiving:
        return None  # marked: its removal was interrupted, go on with it
    if plan.status not in ENDED:
        return "not finished"
    if any(plan.count(s) for s in LIVE):
        return "tasks not finished"
    if plan.job:
        return "plan command in progress"
    if plan.pending_rollback:
        return "rollback pending"
    updated = plan.updated_at or 0
    if updated > cutoff_ms:
        return "changed recently"
    checked = plan.kept_checked_at or 0
    if plan.archived_at is not None and updated <= checked and newest_plan_ms <= checked:
        return "archived; its kept tasks are still their tenants' newest"
    return None


def task_row(task: TaskRecord, stages: list[dict[str, Any]]) -> dict[str, Any]:
    """The archive row of one task hash (secrets redacted as everywhere)."""
    config: Any = None
    version = None
    if task.config:
        try:
            parsed = json.loads(task.config)
        except ValueError:
            parsed = {"unreadable": True}
        if isinstance(parsed, dict):
            version = parsed.get("planVersion")
        config = redact(parsed)
    kept = {k: v for k, v in task.raw.items() if k not in _NOT_KEPT and v is not None}
    return {
        "task_id": task.task_id,
        "plan_id": task.plan_id,
        "tenant_id": task.tenant_id,
        "plan_version": version if isinstance(version, int) else None,
        "status": task.status.value if task.status else "",
        "run_kind": task.run_kind.value if task.run_kind else None,
        "run_id": task.run_id,
        "failure_code": task.failure_code,
        "last_error": mask_patterns(task.last_error),
        "failed_stage": task.failed_stage,
        "stages": stages,
        "config": config,
        "fields": redact(kept),
        "created_at": task.created_at,
        "started_at": task.started_at,
        "ended_at": task.ended_at,
        "updated_at": task.updated_at,
    }


def plan_row(plan: PlanRecord, plan_id: str, ended_at: int | None, at: int) -> dict[str, Any]:
    """The archive row of one plan: its hash as stored (`fields`, but for the transient
    archiving flag; secrets redacted) and the columns the archive's reads filter on."""
    strategy: Any = None
    if plan.strategy:
        try:
            strategy = redact(json.loads(plan.strategy))
        except ValueError:
            strategy = None
    return {
        "plan_id": plan_id,
        "digest": plan.digest,
        "status": plan.status,
        "strategy": strategy,
        # no plan hash holds who submitted it (no script writes a submitter): the column
        # stays for the archive's schema
        "submitted_by": "",
        "total": plan.total or 0,
        "counts": plan.counts_as_stored(),
        "fields": redact({k: v for k, v in plan.raw.items() if k != PlanField.ARCHIVING}),
        "created_at": plan.created_at or None,
        "updated_at": plan.updated_at or None,
        "ended_at": ended_at or plan.updated_at or None,
        "archived_at": at,
    }


def event_row(plan_id: str, entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    ms, _, seq = entry_id.partition("-")
    return {
        "plan_id": plan_id,
        "event_id": entry_id,
        "ms": int(ms),
        "seq": int(seq or 0),
        "type": fields.get("type", ""),
        "tenant_id": fields.get("tenantId") or None,
        "fields": redact(dict(fields)),
    }


def _timeline_entry(fields: dict[str, str]) -> dict[str, Any] | None:
    kind = fields.get("type", "")
    if not kind.startswith(("STAGE_", "TASK_")):
        return None
    entry: dict[str, Any] = {"type": kind, "ts": _int(fields.get("ts"))}
    for name in ("stage", "runKind", "code"):
        if fields.get(name):
            entry[name] = fields[name]
    return entry


def _unchanged_since_archived(plan: PlanRecord) -> bool:
    """Archived before, and nothing moved in the plan since (its updatedAt is older)."""
    archived = plan.archived_at or 0
    return bool(archived) and (plan.updated_at or 0) <= archived


def _merged(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen = {(e.get("type"), e.get("ts"), e.get("stage")) for e in old}
    return [*old, *(e for e in new if (e.get("type"), e.get("ts"), e.get("stage")) not in seen)]


class Retention:
    """Archives and removes finished plans (see the module docstring)."""

    def __init__(
        self,
        r: redis.Redis,
        settings: Settings,
        archive: Archive | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.settings = settings
        self.store = Store(r, settings)
        self.plans = RetainedPlans(r)
        self._archive = archive
        self.clock = clock
        #: One slice of a plan's removal (an attribute: a test stops a pass between two).
        self._drop = self.plans.drop

    @property
    def archive(self) -> Archive:
        if self._archive is None:  # opened (and migrated) on first use only
            from deployer.archive import Archive

            self._archive = Archive.open(self.settings)
        return self._archive

    # ---- a pass ----------------------------------------------------------------------------

    def due_plans(
        self, older_than: float | None = None, only: Collection[str] | None = None
    ) -> list[str]:
        """Plans due now (oldest first), `older_than` seconds instead of the setting;
        `only`: among these plans only."""
        age = self.settings.retention_seconds if older_than is None else older_than
        now = self.clock()
        cutoff = now - int(age * 1000)
        newest_ms = self.plans.newest_plan_ms()
        candidates = self.plans.created_before(cutoff)
        if only is not None:
            wanted = set(only)
            candidates = [p for p in candidates if p in wanted]
        due: list[str] = []
        for start in range(0, len(candidates), _SCAN_PAGE):
            page = candidates[start : start + _SCAN_PAGE]
            for c in self.plans.candidates(page, _DUE_FIELDS, LIVE):
                plan = c.plan
                if plan is None or (c.busy and not plan.archiving):
                    continue
                if due_reason(plan, cutoff, newest_ms) is None:
                    due.append(c.plan_id)
        return due

    def run_pass(
        self,
        older_than: float | None = None,
        dry_run: bool = False,
        deadline: float | None = None,
        stopped: threading.Event | None = None,
        only: Collection[str] | None = None,
    ) -> PassReport:
        """Archive and remove every due plan (dry: only name them; `only`: of these plans).
        Stops early at `deadline` (monotonic) or when `stopped` is set; the rest wait for
        the next pass. A pass that raises (the archive database down, Redis gone) is counted
        in `deployer:stats` (`record_failure`) and raised again; one that ends records its
        plans and the time of its success there (the exporter's deployer_retention_*)."""
        report = PassReport()
        try:
            self._pass(report, older_than, dry_run, deadline, stopped, only)
        except Exception as exc:
            if not dry_run:
                self.record_failure(exc)
            raise
        if not dry_run:
            self.record_success(report)
        return report

    def _pass(
        self,
        report: PassReport,
        older_than: float | None,
        dry_run: bool,
        deadline: float | None,
        stopped: threading.Event | None,
        only: Collection[str] | None,
    ) -> None:
        for plan_id in self.due_plans(older_than, only):
            if dry_run:
                report.archived.append(plan_id)
                continue
            if (deadline is not None and time.monotonic() > deadline) or (
                stopped is not None and stopped.is_set()
            ):
                break
            outcome = self.archive_plan(plan_id, report)
            if outcome not in (DropVerdict.DONE, DropVerdict.KEPT):
                report.skipped[plan_id] = outcome

    # ---- what an operator sees -------------------------------------------------------------

    def record_success(self, report: PassReport) -> None:
        """Count the pass's plans and tasks, stamp its success and end a failure streak
        (logged once when it ends)."""
        try:
            streak = self.plans.count_success(
                len(report.archived), report.tasks_archived, self.clock()
            )
        except redis.RedisError:
            return
        if streak:
            log.warning("retention recovered after %d failed pass(es)", streak)

    def record_failure(self, exc: BaseException) -> None:
        """Count a failed pass; the first of a streak (across workers: the streak is in
        Redis) is logged as an error with its cause, the others at debug level."""
        reason = failure_reason(exc)
        try:
            streak = self.plans.count_failure(reason)
        except redis.RedisError:
            streak = 1  # Redis itself is gone: say so every time
        if streak == 1:
            log.error("retention pass failed (%s): %s: %s; nothing is removed from Redis "
                      "before its archive copy commits, the next pass tries again",
                      reason, type(exc).__name__, exc)  # fmt: skip
        else:
            log.debug("retention pass failed again (%d in a row): %s", streak, exc)

    # ---- one plan --------------------------------------------------------------------------

    def archive_plan(self, plan_id: str, report: PassReport | None = None) -> str:
        """Archive the plan and remove it from Redis; what happened ('DONE', 'KEPT' (some
        tasks stay live), 'BUSY' (another worker has it), 'LIVE', 'CHANGED', 'GONE')."""
        report = report if report is not None else PassReport()
        token = uuid.uuid4().hex
        if not self.plans.lock(plan_id, token, self._lock_ms()):
            return "BUSY"
        try:
            plan = self.plans.plan(plan_id)
            if plan is None:
                return "GONE"
            if not plan.archiving:
                if _unchanged_since_archived(plan):
                    # archived before and not changed since (a newer plan replaced some of
                    # its kept tasks): the archive already holds it, only removal is left
                    outcome = self._mark_archived(plan_id, plan, token)
                else:
                    outcome = self._copy(plan_id, plan, token, report)
                if outcome != MarkVerdict.OK:
                    return outcome.value
            return self._remove(plan_id, token, report).value
        finally:
            self.plans.unlock(plan_id, token)

    def _copy(self, plan_id: str, plan: PlanRecord, token: str, report: PassReport) -> MarkVerdict:
        """Steps 1 and 2: the archive copy, committed, then the mark in Redis."""
        timeline: dict[str, list[dict[str, Any]]] = defaultdict(list)
        after: str | None = None
        while True:
            entries = self._timed(report, partial(self.plans.plan_events, plan_id, after, _BATCH))
            rows = []
            for entry_id, fields in entries:
                rows.append(event_row(plan_id, entry_id, fields))
                tenant = fields.get("tenantId")
                step = _timeline_entry(fields)
                if tenant and step is not None:
                    timeline[tenant].append(step)
            self.archive.write(events=rows)
            report.events_archived += len(rows)
            self._renew(plan_id, token)
            if len(entries) < _BATCH:
                break
            after = entries[-1][0]
        ended = 0
        at = 0
        while True:
            ids: list[str] = self._timed(report, partial(self.plans.task_ids, plan_id, at, _BATCH))
            whole = self._timed(report, partial(self.store.get_whole_tasks, ids))
            records = [t for t in whole if t is not None]
            rows = [task_row(t, timeline.get(t.tenant_id, [])) for t in records]
            if plan.archived_at is not None:  # again: its older events are in the archive only
                for row in rows:
                    before = self.archive.task(row["task_id"])
                    if before:
                        row["stages"] = _merged(before["stages"] or [], row["stages"])
            ended = max([ended, *(r["ended_at"] or 0 for r in rows)])
            self.archive.write(tasks=rows)
            report.tasks_archived += len(rows)
            self._renew(plan_id, token)
            if len(ids) < _BATCH:
                break
            at += _BATCH
        self.archive.write(plan=plan_row(plan, plan_id, ended or None, self.clock()))
        return self._mark_archived(plan_id, plan, token)

    def _mark_archived(self, plan_id: str, plan: PlanRecord, token: str) -> MarkVerdict:
        """Step 2 (lua/archive_mark.lua): OK when the plan may now be removed."""
        outcome = self.plans.mark(plan_id, token, plan, self.clock())
        if outcome != MarkVerdict.OK:
            log.info("plan %s archived but left in Redis: %s", plan_id, outcome)
        return outcome

    def _remove(self, plan_id: str, token: str, report: PassReport) -> DropVerdict:
        """Step 3: slices of archive_drop.lua until the plan is gone (or only kept tasks)."""
        size = self.settings.retention_slice
        while True:
            part: DropSlice = self._timed(
                report, lambda: self._drop(plan_id=plan_id, token=token, count=size)
            )
            report.tasks_removed += part.removed
            if part.verdict == DropVerdict.MORE:
                self._renew(plan_id, token)
                continue
            if part.verdict in (DropVerdict.DONE, DropVerdict.KEPT):
                report.tasks_kept += part.kept
                report.archived.append(plan_id)
                log.info("plan %s archived and removed from Redis (%d tasks kept live)",
                         plan_id, part.kept)  # fmt: skip
            return part.verdict

    # ---- plumbing --------------------------------------------------------------------------

    def _timed(self, report: PassReport, call: Callable[[], Any]) -> Any:
        began = time.perf_counter()
        try:
            return call()
        finally:
            report.longest_slice = max(report.longest_slice, time.perf_counter() - began)

    def _lock_ms(self) -> int:
        return int(self.settings.retention_lock_seconds * 1000)

    def _renew(self, plan_id: str, token: str) -> None:
        self.plans.renew(plan_id, token, self._lock_ms())
