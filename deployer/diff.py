"""A dry run that tells the truth: what a plan would change, tenant by tenant and
field by field, against what the target Redis holds now. Reads only; writes nothing.

The plan is validated by `deployer.intake.validate_plan` with submit's own `task_row`, so a
plan the diff accepts is a plan submit accepts. The would-be values come from the same
factory and assemblers a forward run uses, serialized as KeyValueWrite writes them; values
that carry a time (ob-campaign's `timestamp`) differ on every run and show as changed.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from deployer import keys
from deployer.errors import Code
from deployer.intake import plan_digest, task_row, validate_plan
from deployer.models import StageSpec, TenantConfig
from deployer.record import Field
from deployer.settings import Settings
from deployer.store import read_tasks
from deployer.strategy import plan_waves
from stages import registry
from stages.factory import forward_stages
from stages.steps.key_value_write import compact


def would_write(config: TenantConfig, stages: list[StageSpec]) -> dict[str, str | None]:
    """Field -> the value a forward run writes (None: the field is deleted)."""
    out: dict[str, str | None] = {}
    for stage in stages:
        for step in stage.steps:
            for field, value in registry.step(step.type).writes(step).items():
                out[field] = compact(value)
    if out:
        version = config.plan_version
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


def field_changes(current: dict[str, str], target: dict[str, str | None]) -> list[dict[str, Any]]:
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
            changes.append({"field": field, "change": "changed", "before": before, "after": after})
    return changes


def diff_plan(
    payload: Any, settings: Settings, state: redis.Redis, target: redis.Redis
) -> dict[str, Any]:
    """The diff of a plan (raises PlanValidationError exactly when submit would refuse it)."""
    head, kept = validate_plan(
        payload, settings, lambda config: (config, task_row(config, settings))
    )
    tenants: list[dict[str, Any]] = []
    pipe = target.pipeline(transaction=False)
    for config, _row in kept:
        pipe.hgetall(keys.config_hash(settings.key_prefix, config.tenant_id))
    currents = pipe.execute()
    pipe = state.pipeline(transaction=False)
    for config, _row in kept:
        pipe.get(keys.tenant(config.tenant_id))
    latest = pipe.execute()
    summary = {"tenants": len(kept), "changing": 0, "unchanged": 0, "ownedElsewhere": 0}
    for (config, _row), current, task_id in zip(kept, currents, latest, strict=True):
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
        other = _other_plan(state, task_id, head.plan_id)
        if other:
            entry["otherPlan"] = other
            summary["ownedElsewhere"] += 1
        summary["changing" if changes else "unchanged"] += 1
        tenants.append(entry)
    stored = state.hget(keys.plan(head.plan_id), "digest")
    exists = bool(state.exists(keys.plan(head.plan_id)))
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


def _other_plan(state: redis.Redis, task_id: Any, plan_id: str) -> dict[str, Any] | None:
    """The tenant's latest task when it belongs to another plan: is that plan still working
    on it, and is it newer than this plan (if this plan exists)?"""
    if not task_id:
        return None
    (task,) = read_tasks(state, [str(task_id)], (Field.PLAN_ID, Field.STATUS, Field.CREATED_AT))
    if not task.plan_id or task.plan_id == plan_id:
        return None
    mine = state.hget(keys.plan(plan_id), "createdAt")
    return {
        "planId": task.plan_id,
        "taskStatus": task.status.value if task.status else None,
        "running": task.in_flight,
        "newer": bool(mine) and (task.created_at or 0) > int(mine or 0),
    }
