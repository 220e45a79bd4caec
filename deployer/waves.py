"""Waves in Redis (issue 17): what a plan with a strategy stores, how it moves on, and how
it reads back.

Moving on is one atomic script (lua/wave_step.lua) run whenever it may be due: by the stage
that finished a wave (its fill reports the plan's step as due), by every worker's reconciler
for due times in `deployer:plan-timers` (bake ends, gate re-checks), and by the operator's
approve/resume. Nothing waits in a worker, and nothing is lost with one: the state and the
due times live in Redis, so a bake that ended while every worker was down moves on when one
comes back, and an approval given meanwhile is already recorded.

Per plan hash (fields beside the task counters): `strategy` (JSON), `waves` (how many),
`wave` (current index), `waveState`, `bakeUntil`, `bakeMs`, `approval`, `gate`, budget
(`budgetMax`, `budgetScope`, `budgetOnExceed`), `stopReason`, and per wave `w:{i}:n`,
`w:{i}:c:{STATUS}`, `w:{i}:budget`, `w:{i}:startedAt`, `w:{i}:endedAt`, `w:{i}:approvedBy`.
Each task hash has `wave`; list `deployer:plan:{P}:wave:{i}` holds a wave's task ids.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx

from deployer.models import TaskStatus
from deployer.settings import Settings
from deployer.store import Store, WaveOutcome, WavePlan, now_ms
from deployer.strategy import Strategy, budget_limit, plan_waves

log = logging.getLogger("deployer.waves")

#: Wave states shown by status, events and metrics.
WAVE_STATES = ("PENDING", "RUNNING", "BAKING", "AWAITING_APPROVAL", "AWAITING_GATE", "DONE",
               "HALTED")  # fmt: skip
FAILED_STATES = (TaskStatus.FAILED.value, TaskStatus.ROLLBACK_FAILED.value)
DONE_STATES = (
    TaskStatus.COMPLETED.value,
    TaskStatus.ROLLED_BACK.value,
    TaskStatus.CANCELLED.value,
    "SUPERSEDED",
)
#: Wave steps chained in one `advance` (a gate answer, a wave started and filled, ...).
MAX_STEPS = 8


def wave_plan(
    plan_id: str, tenant_ids: list[str], strategy: Strategy, settings: Settings
) -> WavePlan:
    """The waves fixed at submit: each task's wave and the plan hash's wave fields."""
    waves = plan_waves(tenant_ids, strategy)
    index = {t: i for i, wave in enumerate(waves) for t in wave}
    fields: dict[str, str | int] = {
        "strategy": strategy.model_dump_json(by_alias=True, exclude_none=True),
        "waves": len(waves),
        "wave": 0,
        "waveState": "AWAITING_GATE" if strategy.gate else "RUNNING",
        "bakeMs": strategy.bake_seconds * 1000,
        "approval": strategy.approval,
        "gate": strategy.gate or "",
        "eventsMaxlen": settings.events_maxlen,
    }
    budget = strategy.failure_budget
    if budget is not None:
        fields["budgetMax"] = budget_limit(budget, len(tenant_ids))
        fields["budgetScope"] = budget.scope
        fields["budgetOnExceed"] = budget.on_exceed
    now = now_ms()
    for i, wave in enumerate(waves):
        fields[f"w:{i}:n"] = len(wave)
        fields[f"w:{i}:c:PENDING"] = len(wave)
        if budget is not None:
            fields[f"w:{i}:budget"] = budget_limit(budget, len(wave))
    if not strategy.gate:
        fields["w:0:startedAt"] = now
    return WavePlan([index[t] for t in tenant_ids], fields)


def call_gate(url: str, plan_id: str, wave: int, timeout: float) -> bool:
    """Ask the operator's gate webhook whether wave `wave` may start: 2xx = yes, anything
    else (an error, a timeout, no answer) = not yet. The URL comes from settings only."""
    try:
        answer = httpx.post(
            url, json={"planId": plan_id, "wave": wave}, timeout=timeout, follow_redirects=False
        )
    except httpx.HTTPError as exc:
        log.warning("gate for plan %s wave %d unreachable: %s", plan_id, wave, type(exc).__name__)
        return False
    ok = 200 <= answer.status_code < 300
    if not ok:
        log.info("gate for plan %s wave %d said %d: holding", plan_id, wave, answer.status_code)
    return ok


def _counts(plan: dict[str, str], index: int) -> dict[str, int]:
    prefix = f"w:{index}:c:"
    return {k[len(prefix) :]: int(v) for k, v in plan.items() if k.startswith(prefix) and int(v)}


def wave_state(plan: dict[str, str], index: int) -> str:
    current, state = int(plan.get("wave", 0)), plan.get("waveState", "RUNNING")
    if state == "APPROVED":
        state = "RUNNING"
    if index < current:
        return "DONE"
    if index == current:
        return state
    return "HALTED" if state == "HALTED" else "PENDING"


def waves_of(plan: dict[str, str]) -> list[dict[str, Any]]:
    """Each wave of a plan hash as status shows it (public in `deployer status --json`)."""
    out: list[dict[str, Any]] = []
    for i in range(int(plan.get("waves", 0) or 0)):
        counts = _counts(plan, i)
        row: dict[str, Any] = {
            "index": i,
            "state": wave_state(plan, i),
            "tenants": int(plan.get(f"w:{i}:n", 0)),
            "done": sum(counts.get(s, 0) for s in DONE_STATES),
            "failed": sum(counts.get(s, 0) for s in FAILED_STATES),
            "counts": counts,
        }
        if row["state"] == "BAKING" and plan.get("bakeUntil"):
            row["bakeUntil"] = int(plan["bakeUntil"])
        for field in ("startedAt", "endedAt", "approvedBy", "approvedAt"):
            value = plan.get(f"w:{i}:{field}")
            if value:
                row[field] = int(value) if field.endswith("At") else value
        out.append(row)
    return out


def wave_summary(store: Store, plan_id: str) -> list[dict[str, Any]]:
    """The waves of plan `plan_id` ([] for a plan without a strategy)."""
    return waves_of(store.get_plan(plan_id))


def rollout_view(plan: dict[str, str]) -> dict[str, Any]:
    """What `deployer status P --json` adds for a plan with a strategy ({} otherwise)."""
    if not plan.get("strategy"):
        return {}
    view: dict[str, Any] = {
        "strategy": json.loads(plan["strategy"]),
        "wave": int(plan.get("wave", 0)),
        "waveState": wave_state(plan, int(plan.get("wave", 0))),
        "waves": waves_of(plan),
    }
    if plan.get("bakeUntil"):
        view["bakeUntil"] = int(plan["bakeUntil"])
    if plan.get("budgetMax") is not None:
        scope = plan.get("budgetScope", "plan")
        if scope == "wave":
            i = int(plan.get("wave", 0))
            used, limit = _counts(plan, i).get("FAILED", 0), int(plan.get(f"w:{i}:budget", 0))
        else:
            used, limit = int(plan.get("c:FAILED", 0)), int(plan["budgetMax"])
        view["budget"] = {
            "max": limit,
            "used": used,
            "scope": scope,
            "onExceed": plan.get("budgetOnExceed", "pause"),
            "exceeded": used > limit,
        }
    if plan.get("stopReason"):
        view["stopReason"] = plan["stopReason"]
    return view


__all__ = [
    "WAVE_STATES",
    "WaveOutcome",
    "call_gate",
    "rollout_view",
    "wave_plan",
    "wave_summary",
    "waves_of",
]
