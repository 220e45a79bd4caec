"""A dry run that tells the truth: what a plan would change, tenant by tenant and
field by field, against what the target Redis holds now. Reads only; writes nothing.

The plan is validated by `deployer.intake.validate_plan` with submit's own `task_row`, so a
plan the diff accepts is a plan submit accepts. The would-be values come from the same
factory and assemblers a forward run uses, serialized as KeyValueWrite writes them. Parts of
a value that every run sets anew (ob-campaign's `timestamp`: an assembler's `volatile`
paths) are not a change: a field that differs only there is `volatile`.

`diff_rollback` does the same for a rollback of a tenant's task or a plan's: the run that
`deployer rollback` would prepare (`deployer.planner.prepare_rollback`), its writes and the
fields it deletes, and the services it cannot restore, each with why.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from deployer import jsondiff
from deployer.errors import Code, DeployerError, NotFound
from deployer.intake import plan_digest, task_row, validate_plan
from deployer.lifecycle import Command, Effect, decide
from deployer.models import StageSpec, TenantConfig, task_id_for
from deployer.planner import forward_run, prepare_rollback, written_fields
from deployer.settings import Settings
from deployer.state.plans import PlanField, PlanRecord, Plans
from deployer.state.record import Field, TaskRecord
from deployer.state.store import Store, read_tasks
from deployer.state.targets import read_configs
from deployer.strategy import plan_waves
from stages import registry
from stages.factory import forward_stages
from stages.steps.key_value_write import compact

#: Whole task hashes read per round trip by a plan's rollback diff.
_READ_CHUNK = 500


def would_write(config: TenantConfig, stages: list[StageSpec]) -> dict[str, str | None]:
    """Field -> the value a forward run writes (None: the field is deleted)."""
    return _writes(config.plan_version, stages)


def _writes(
    version: int | None, stages: list[StageSpec], deleted: frozenset[str] = frozenset()
) -> dict[str, str | None]:
    out: dict[str, str | None] = dict.fromkeys(sorted(deleted))
    for stage in stages:
        for step in stage.steps:
            for field, value in registry.step(step.type).writes(step).items():
                out[field] = compact(value)
    if out:
        out["metadata"] = compact({"version": version}) if version is not None else None
    return out


def _version(raw: str | None) -> int | None:
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    v = value.get("version") if isinstance(value, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def version_change(before: int | None, after: int | None) -> str:
    if after is None:
        return "none"  # no planVersion: metadata is deleted (with a warning) when written
    if before is None:
        return "new"
    return "up" if after > before else "down" if after < before else "same"


def volatile_paths() -> dict[str, frozenset[str]]:
    """Hash field -> the JSON paths of its value every run sets anew (assemblers declare)."""
    out: dict[str, frozenset[str]] = {}
    for a in registry.assemblers():
        for field, paths in a.volatile.items():
            out[field] = out.get(field, frozenset()) | frozenset(paths)
    return out


def field_changes(
    current: dict[str, str],
    target: dict[str, str | None],
    volatile: dict[str, frozenset[str]] | None = None,
) -> list[dict[str, Any]]:
    """Per field: added, removed, changed, or `volatile` (it differs only at paths every run
    sets anew, listed in `volatile`; not a change)."""
    volatile = volatile_paths() if volatile is None else volatile
    changes: list[dict[str, Any]] = []
    for field, after in target.items():
        before = current.get(field)
        if after is None:
            if before is not None:
                changes.append({"field": field, "change": "removed", "before": before})
            continue
        if before is None:
            changes.append({"field": field, "change": "added", "after": after})
        elif before != after:
            entry: dict[str, Any] = {
                "field": field,
                "change": "changed",
                "before": before,
                "after": after,
            }
            moving = volatile.get(field)
            differs = jsondiff.text_paths(before, after) if moving else None
            if differs:
                regenerated = [d.path for d in differs if d.path in moving]  # type: ignore[operator]
                if regenerated:
                    entry["volatile"] = regenerated
                if len(regenerated) == len(differs):
                    entry["change"] = "volatile"
            changes.append(entry)
    return changes


def is_change(entry: dict[str, Any]) -> bool:
    return bool(entry["change"] != "volatile")


def diff_plan(
    payload: Any, settings: Settings, state: redis.Redis, target: redis.Redis
) -> dict[str, Any]:
    """The diff of a plan (raises PlanValidationError exactly when submit would refuse it)."""
    head, kept = validate_plan(
        payload, settings, lambda config: (config, task_row(config, settings))
    )
    tenant_ids = [config.tenant_id for config, _row in kept]
    currents = read_configs(target, settings.key_prefix, tenant_ids)
    plans = Plans(state)
    plan = plans.fields(head.plan_id, PlanField.DIGEST, PlanField.CREATED_AT)
    others = _other_plans(state, plans.latest_task_ids(tenant_ids), head.plan_id, plan)
    tenants: list[dict[str, Any]] = []
    summary = {"tenants": len(kept), "changing": 0, "unchanged": 0, "ownedElsewhere": 0}
    for (config, _row), current, other in zip(kept, currents, others, strict=True):
        writes = would_write(config, forward_stages(config, settings))
        changes = field_changes(current, writes)
        entry: dict[str, Any] = {
            "tenantId": config.tenant_id,
            "changes": changes,
            "version": {
                "before": _version(current.get("metadata")),
                "after": config.plan_version,
                "change": version_change(_version(current.get("metadata")), config.plan_version),
            },
        }
        if other:
            entry["otherPlan"] = other
            summary["ownedElsewhere"] += 1
        summary["changing" if any(map(is_change, changes)) else "unchanged"] += 1
        tenants.append(entry)
    exists = plan is not None
    stored = plan.digest if plan is not None else None
    digest = plan_digest(head, (row.config_json for _, row in kept))
    out: dict[str, Any] = {
        "ok": True,
        "planId": head.plan_id,
        "planExists": exists,
        # what a submit of it would do now: create it, nothing (identical), or PLAN_CONFLICT
        "submit": "create"
        if not exists
        else "duplicate"
        if stored == digest
        else Code.PLAN_CONFLICT,
        "summary": summary,
        "tenants": tenants,
    }
    if head.strategy is not None:
        waves = plan_waves([config.tenant_id for config, _ in kept], head.strategy)
        out["strategy"] = head.strategy.model_dump(mode="json", by_alias=True, exclude_none=True)
        out["waves"] = [{"index": i, "tenants": w} for i, w in enumerate(waves)]
    return out


def _other_plans(
    state: redis.Redis, latest: list[str | None], plan_id: str, plan: PlanRecord | None
) -> list[dict[str, Any] | None]:
    """For each tenant, its latest task when it belongs to another plan: is that plan still
    working on it, and is it newer than this plan (if this plan exists)? One round trip."""
    wanted = [task_id for task_id in latest if task_id]
    read = read_tasks(state, wanted, (Field.PLAN_ID, Field.STATUS, Field.CREATED_AT))
    found = dict(zip(wanted, read, strict=True))
    mine = plan.created_at if plan is not None else None
    out: list[dict[str, Any] | None] = []
    for task_id in latest:
        task = found[task_id] if task_id else None
        if task is None or not task.plan_id or task.plan_id == plan_id:
            out.append(None)
            continue
        out.append({
            "planId": task.plan_id,
            "taskStatus": task.status.value if task.status else None,
            "running": task.in_flight,
            "newer": mine is not None and (task.created_at or 0) > mine,
        })  # fmt: skip
    return out


def diff_rollback(
    state: Store,
    settings: Settings,
    target: redis.Redis,
    plan_id: str | None,
    tenant_id: str | None,
) -> dict[str, Any]:
    """What `deployer rollback` of this target would do, per tenant, against the live hashes:
    the same run the command prepares (never sent; nothing is written). A task the command
    would refuse says why (`refused`: code and message); a plan's tasks that never started
    are left out, as the plan's rollback leaves them."""
    tasks = _rollback_tasks(state, plan_id, tenant_id)
    if plan_id and not tenant_id:
        tasks = [t for t in tasks if t.started_at]
    currents = read_configs(target, settings.key_prefix, [t.tenant_id for t in tasks])
    volatile = volatile_paths()
    summary = {"tenants": len(tasks), "changing": 0, "unchanged": 0, "unrestorable": 0,
               "refused": 0}  # fmt: skip
    tenants = [
        _rollback_entry(task, current, settings, volatile)
        for task, current in zip(tasks, currents, strict=True)
    ]
    for entry in tenants:
        if "refused" in entry:
            summary["refused"] += 1
            continue
        summary["changing" if any(map(is_change, entry["changes"])) else "unchanged"] += 1
        summary["unrestorable"] += bool(entry["unrestored"])
    return {
        "ok": True,
        "rollback": {k: v for k, v in (("planId", plan_id), ("tenantId", tenant_id)) if v},
        "summary": summary,
        "tenants": tenants,
    }


def _rollback_entry(
    task: TaskRecord,
    current: dict[str, str],
    settings: Settings,
    volatile: dict[str, frozenset[str]],
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "tenantId": task.tenant_id,
        "taskId": task.task_id,
        "status": task.status.value if task.status else None,
    }
    try:
        if task.status is None:
            raise DeployerError("the task has no status", code=Code.TASK_NOT_FOUND)
        decided = decide(Command.ROLLBACK, task.status, task.control or None)
        if decided.effect is not Effect.NOW:
            raise DeployerError(decided.note, code=decided.code)
        previous = task.run_model() or forward_run(
            task.plan_id, task.task_id, task.tenant_config(), task.run_id, settings
        )
        run = prepare_rollback(task, previous, settings)
    except DeployerError as exc:
        return {**entry, "refused": {"code": exc.code, "message": exc.message}}
    version = run.context.plan_version
    deleted = frozenset(written_fields(previous.stages) - written_fields(run.stages))
    before = _version(current.get("metadata"))
    return {
        **entry,
        "changes": field_changes(current, _writes(version, run.stages, deleted), volatile),
        "version": {"before": before, "after": version, "change": version_change(before, version)},
        "unrestored": [u.wire() for u in run.unrestored],
    }


def _rollback_tasks(state: Store, plan_id: str | None, tenant_id: str | None) -> list[TaskRecord]:
    """The whole records of the tasks a rollback of this target decides on."""
    if plan_id and tenant_id:
        ids = [task_id_for(plan_id, tenant_id)]
    elif tenant_id:
        latest = state.task_id_for_tenant(tenant_id)
        if not latest:
            raise NotFound(f"no task for tenant {tenant_id}", code=Code.TASK_NOT_FOUND)
        ids = [latest]
    elif plan_id:
        if not state.plan_exists(plan_id):
            raise NotFound(f"no plan {plan_id}", code=Code.PLAN_NOT_FOUND)
        ids = state.plan_task_ids(plan_id)
    else:
        raise NotFound("a rollback diff needs --tenant and/or --plan", code=Code.TARGET_INVALID)
    tasks = [
        t
        for start in range(0, len(ids), _READ_CHUNK)  # a round trip per chunk, not per task
        for t in state.get_whole_tasks(ids[start : start + _READ_CHUNK])
        if t is not None
    ]
    if tenant_id and not tasks:
        raise NotFound(f"no task for tenant {tenant_id}", code=Code.TASK_NOT_FOUND)
    return tasks
