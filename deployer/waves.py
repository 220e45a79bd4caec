"""Waves in Redis: what a plan with a strategy stores, and how it reads back.

Moving on is one atomic script (lua/wave_step.lua), run by deployer/rollout.py whenever it
may be due: by the stage that finished a wave (its fill reports the plan's step as due), by
every worker's plan-timer loop for due times in `deployer:plan-timers` (bake ends, window
openings, gate re-checks), and by the operator's approve/promote/resume. Nothing waits in
a worker, and nothing is lost with one: the state and the due times live in Redis, so a bake
that ended while every worker was down moves on when one comes back, and an approval given
meanwhile is already recorded.

Per plan hash (fields beside the task counters): `strategy` (JSON), `waves` (how many),
`wave` (current index), `waveState`, `bakeUntil`, `bakeMs`, `approval`, `gate`, budget
(`budgetMax`, `budgetScope`, `budgetOnExceed`, `budgetForgiven`, `budgetExceeded*`),
`stopReason`, `promoteAll`, the gate's last refusal (`gateStatus`, `gateAnswer`,
`gateCheckedAt`, `gateNextAt`, `gateRefusals`), `windowOpensAt`, and per wave `w:{i}:n`,
`w:{i}:c:{STATUS}`, `w:{i}:budget`, `w:{i}:forgiven`, `w:{i}:startedAt`, `w:{i}:endedAt`,
`w:{i}:approvedBy`, `w:{i}:approvedAt`, `w:{i}:promotedBy`, `w:{i}:promotedAt`,
`w:{i}:noBake` (their names, and how they read back: `PlanField`, `WaveField` and
`PlanRecord` in deployer/state/plans.py). Each task hash has `wave`; list
`deployer:plan:{P}:wave:{i}` holds a wave's task ids.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deployer.isotime import iso
from deployer.models import TaskStatus
from deployer.settings import Settings
from deployer.state.plans import (
    PlanField,
    PlanRecord,
    Plans,
    WaveField,
    wave_count_field,
    wave_field,
)
from deployer.state.store import Store, WaveOutcome, WavePlan, now_ms
from deployer.strategy import Strategy, budget_limit, plan_waves
from deployer.window import window_arg

#: Wave states shown by status, events and metrics (PAUSED: the current wave of a paused
#: plan, which the stored state still calls RUNNING).
WAVE_STATES = ("PENDING", "RUNNING", "PAUSED", "BAKING", "AWAITING_APPROVAL", "AWAITING_WINDOW",
               "AWAITING_GATE", "DONE", "HALTED")  # fmt: skip
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
    now = now_ms()
    closed = window_arg(strategy.window, now).startswith("CLOSED")
    first = "AWAITING_WINDOW" if closed else "AWAITING_GATE" if strategy.gate else "RUNNING"
    fields: dict[str, str | int] = {
        PlanField.STRATEGY.value: strategy.model_dump_json(by_alias=True, exclude_none=True),
        PlanField.WAVES.value: len(waves),
        PlanField.WAVE.value: 0,
        PlanField.WAVE_STATE.value: first,
        PlanField.BAKE_MS.value: strategy.bake_seconds * 1000,
        PlanField.APPROVAL.value: strategy.approval,
        PlanField.GATE.value: strategy.gate or "",
        PlanField.EVENTS_MAXLEN.value: settings.events_maxlen,
    }
    budget = strategy.failure_budget
    if budget is not None:
        fields[PlanField.BUDGET_MAX.value] = budget_limit(budget, len(tenant_ids))
        fields[PlanField.BUDGET_SCOPE.value] = budget.scope
        fields[PlanField.BUDGET_ON_EXCEED.value] = budget.on_exceed
    for i, wave in enumerate(waves):
        fields[wave_field(i, WaveField.TENANTS)] = len(wave)
        fields[wave_count_field(i, TaskStatus.PENDING)] = len(wave)
        if budget is not None:
            fields[wave_field(i, WaveField.BUDGET)] = budget_limit(budget, len(wave))
    if first == "RUNNING":
        fields[wave_field(0, WaveField.STARTED_AT)] = now
    return WavePlan([index[t] for t in tenant_ids], fields)


@dataclass(frozen=True)
class Wave:
    """One wave as stored (typed view of its `w:{i}:*` plan fields)."""

    index: int
    state: str
    tenants: int
    counts: dict[str, int]
    budget: int | None = None
    bake_until: int | None = None
    started_at: int | None = None
    ended_at: int | None = None
    approved_by: str | None = None
    approved_at: int | None = None
    promoted_by: str | None = None
    promoted_at: int | None = None
    #: Failures of the wave an operator's `budget --reset` forgave.
    forgiven: int | None = None

    @property
    def done(self) -> int:
        return sum(self.counts.get(s, 0) for s in DONE_STATES)

    @property
    def failed(self) -> int:
        return sum(self.counts.get(s, 0) for s in FAILED_STATES)

    def view(self) -> dict[str, Any]:
        """The wave in `deployer status --json` (public: index, state, tenants, done, failed;
        times ISO-8601 like every other time in status)."""
        row: dict[str, Any] = {
            "index": self.index,
            "state": self.state,
            "tenants": self.tenants,
            "done": self.done,
            "failed": self.failed,
            "counts": self.counts,
        }
        extra = {
            "bakeUntil": iso(self.bake_until),
            "startedAt": iso(self.started_at),
            "endedAt": iso(self.ended_at),
            "approvedBy": self.approved_by,
            "approvedAt": iso(self.approved_at),
            "promotedBy": self.promoted_by,
            "promotedAt": iso(self.promoted_at),
        }
        row.update({k: v for k, v in extra.items() if v is not None})
        return row


@dataclass(frozen=True)
class Rollout:
    """A plan's rollout state, read once from its hash (a PlanRecord) into typed fields: the
    one place Python interprets what the wave scripts keep there."""

    strategy: dict[str, Any]
    wave: int
    state: str
    waves: tuple[Wave, ...]
    bake_until: int | None
    budget_max: int | None
    budget_scope: str
    on_exceed: str
    stop_reason: str | None
    plan: PlanRecord

    @classmethod
    def from_hash(cls, plan: Mapping[str, str] | PlanRecord) -> Rollout | None:
        """From the plan (or its hash as HGETALL read it); None without a strategy."""
        p = plan if isinstance(plan, PlanRecord) else PlanRecord.from_hash(plan)
        if not p.has_strategy:
            return None
        current = p.wave or 0
        state = p.wave_state or "RUNNING"
        state = "RUNNING" if state == "APPROVED" else state
        if state == "RUNNING" and p.control == "PAUSE":
            state = "PAUSED"  # an auto-paused (or paused) plan's wave is not running
        waves = []
        for w in p.wave_records():
            if w.index < current:
                wave_state = "DONE"
            elif w.index == current:
                wave_state = state
            else:
                wave_state = "HALTED" if state == "HALTED" else "PENDING"
            waves.append(
                Wave(
                    index=w.index,
                    state=wave_state,
                    tenants=w.tenants,
                    counts=dict(w.counts),
                    budget=w.budget,
                    bake_until=p.bake_until if wave_state == "BAKING" else None,
                    started_at=w.started_at,
                    ended_at=w.ended_at,
                    approved_by=w.approved_by,
                    approved_at=w.approved_at,
                    promoted_by=w.promoted_by,
                    promoted_at=w.promoted_at,
                    forgiven=w.forgiven,
                )
            )
        return cls(
            strategy=json.loads(p.strategy),
            wave=current,
            state=waves[current].state if current < len(waves) else state,
            waves=tuple(waves),
            bake_until=p.bake_until,
            budget_max=p.budget_max,
            budget_scope=p.budget_scope or "plan",
            on_exceed=p.budget_on_exceed or "pause",
            stop_reason=p.stop_reason or None,
            plan=p,
        )

    def budget(self) -> dict[str, Any] | None:
        """The failure budget now: per plan, or the current wave's for scope wave.

        `used` counts the failed tenants (less those an operator's `budget --reset`
        forgave); once the budget was exceeded it keeps the count it was exceeded with, so
        a rollback that turned the failed tenants ROLLED_BACK does not read "0 used, not
        exceeded" beside a stop reason that says otherwise. An operator's budget change
        clears that record.

        With scope wave the script judges the failed task's own wave, which can be an
        earlier one than the current (a task of wave 0 retried while wave 1 runs): the view
        then names that wave and its figures (`exceededWave`, `exceededUsed`,
        `exceededMax`) beside the current wave's, instead of "not exceeded" beside a plan
        the budget stopped.
        """
        if self.budget_max is None:
            return None
        p = self.plan
        by_wave = self.budget_scope == "wave" and self.wave < len(self.waves)
        if by_wave:
            w = self.waves[self.wave]
            used = w.counts.get("FAILED", 0) - (w.forgiven or 0)
            limit = w.budget or 0
        else:
            used = p.count(TaskStatus.FAILED) - (p.budget_forgiven or 0)
            limit = self.budget_max
        out: dict[str, Any] = {
            "max": limit,
            "used": max(used, 0),
            "scope": self.budget_scope,
            "onExceed": self.on_exceed,
            "exceeded": used > limit,
        }
        if by_wave:
            out["wave"] = self.wave
        record_wave = p.budget_exceeded_wave
        if record_wave is None:
            return out
        out["exceeded"] = True
        out["exceededAt"] = iso(p.budget_exceeded_at)
        if self.budget_scope == "plan" or record_wave == self.wave:
            out["used"] = max(out["used"], p.budget_exceeded_used or 0)
        else:
            out["exceededWave"] = record_wave
            out["exceededUsed"] = p.budget_exceeded_used or 0
            out["exceededMax"] = p.budget_exceeded_max or 0
        return out

    def gate(self) -> dict[str, Any] | None:
        """The gate of the current wave: its name, and its last refusal while it holds the
        wave (HTTP status or error, an excerpt of its answer, when it is asked again)."""
        name = self.strategy.get("gate")
        if not name:
            return None
        p = self.plan
        out: dict[str, Any] = {"name": name, "waiting": self.state == "AWAITING_GATE"}
        if p.gate_status is not None and self.state == "AWAITING_GATE":
            out.update(
                {
                    "status": p.gate_status,
                    "answer": p.gate_answer,
                    "checkedAt": iso(p.gate_checked_at),
                    "nextCheckAt": iso(p.gate_next_at),
                    "refusals": p.gate_refusals or 0,
                }
            )
        return out

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "strategy": self.strategy,
            "wave": self.wave,
            "waveState": self.state,
            "waves": [w.view() for w in self.waves],
        }
        if self.bake_until is not None and self.state == "BAKING":
            out["bakeUntil"] = iso(self.bake_until)
        budget = self.budget()
        if budget is not None:
            out["budget"] = budget
        gate = self.gate()
        if gate is not None:
            out["gate"] = gate
        if self.state == "AWAITING_WINDOW" and self.plan.window_opens_at is not None:
            out["windowOpensAt"] = iso(self.plan.window_opens_at)
        if self.plan.promote_all:
            out["promotedAll"] = True
        if self.stop_reason:
            out["stopReason"] = self.stop_reason
        return out


def waves_of(plan: Mapping[str, str] | PlanRecord) -> list[dict[str, Any]]:
    """Each wave of a plan as status shows it (public in `deployer status --json`)."""
    rollout = Rollout.from_hash(plan)
    return [w.view() for w in rollout.waves] if rollout else []


def wave_summary(store: Store, plan_id: str) -> list[dict[str, Any]]:
    """The waves of plan `plan_id` ([] for a plan without a strategy)."""
    plan = Plans.of(store).get(plan_id)
    return waves_of(plan) if plan is not None else []


def rollout_view(plan: Mapping[str, str] | PlanRecord) -> dict[str, Any]:
    """What `deployer status P --json` adds for a plan with a strategy ({} otherwise)."""
    rollout = Rollout.from_hash(plan)
    return rollout.view() if rollout else {}


__all__ = [
    "WAVE_STATES",
    "Rollout",
    "Wave",
    "WaveOutcome",
    "rollout_view",
    "wave_plan",
    "wave_summary",
    "waves_of",
]
