"""Waves in Redis: what a plan with a strategy stores, how it moves on, and how
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
from dataclasses import dataclass
from typing import Any

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
    import httpx  # only a worker's reconciler asks gates: readers of waves never load it

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

    @property
    def done(self) -> int:
        return sum(self.counts.get(s, 0) for s in DONE_STATES)

    @property
    def failed(self) -> int:
        return sum(self.counts.get(s, 0) for s in FAILED_STATES)

    def view(self) -> dict[str, Any]:
        """The wave in `deployer status --json` (public: index, state, tenants, done, failed)."""
        row: dict[str, Any] = {
            "index": self.index,
            "state": self.state,
            "tenants": self.tenants,
            "done": self.done,
            "failed": self.failed,
            "counts": self.counts,
        }
        extra = {
            "bakeUntil": self.bake_until,
            "startedAt": self.started_at,
            "endedAt": self.ended_at,
            "approvedBy": self.approved_by,
            "approvedAt": self.approved_at,
        }
        row.update({k: v for k, v in extra.items() if v is not None})
        return row


@dataclass(frozen=True)
class Rollout:
    """A plan's rollout state, read once from its hash into typed fields (the Lua scripts
    keep the same fields; this is the one place Python interprets them)."""

    strategy: dict[str, Any]
    wave: int
    state: str
    waves: tuple[Wave, ...]
    bake_until: int | None
    budget_max: int | None
    budget_scope: str
    on_exceed: str
    plan_failed: int
    stop_reason: str | None

    @classmethod
    def from_hash(cls, plan: dict[str, str]) -> Rollout | None:
        if not plan.get("strategy"):
            return None
        current = int(plan.get("wave", 0))
        state = plan.get("waveState", "RUNNING")
        state = "RUNNING" if state == "APPROVED" else state
        bake_until = _int(plan.get("bakeUntil"))
        waves = []
        for i in range(int(plan.get("waves", 0) or 0)):
            if i < current:
                wave_state = "DONE"
            elif i == current:
                wave_state = state
            else:
                wave_state = "HALTED" if state == "HALTED" else "PENDING"
            prefix = f"w:{i}:c:"
            counts = {
                k[len(prefix) :]: int(v) for k, v in plan.items() if k.startswith(prefix) and int(v)
            }
            waves.append(
                Wave(
                    index=i,
                    state=wave_state,
                    tenants=int(plan.get(f"w:{i}:n", 0)),
                    counts=counts,
                    budget=_int(plan.get(f"w:{i}:budget")),
                    bake_until=bake_until if wave_state == "BAKING" else None,
                    started_at=_int(plan.get(f"w:{i}:startedAt")),
                    ended_at=_int(plan.get(f"w:{i}:endedAt")),
                    approved_by=plan.get(f"w:{i}:approvedBy"),
                    approved_at=_int(plan.get(f"w:{i}:approvedAt")),
                )
            )
        return cls(
            strategy=json.loads(plan["strategy"]),
            wave=current,
            state=waves[current].state if current < len(waves) else state,
            waves=tuple(waves),
            bake_until=bake_until,
            budget_max=_int(plan.get("budgetMax")),
            budget_scope=plan.get("budgetScope", "plan"),
            on_exceed=plan.get("budgetOnExceed", "pause"),
            plan_failed=int(plan.get("c:FAILED", 0)),
            stop_reason=plan.get("stopReason") or None,
        )

    def budget(self) -> dict[str, Any] | None:
        """The failure budget now: per plan, or the current wave's for scope wave."""
        if self.budget_max is None:
            return None
        if self.budget_scope == "wave" and self.wave < len(self.waves):
            w = self.waves[self.wave]
            used, limit = w.counts.get("FAILED", 0), w.budget or 0
        else:
            used, limit = self.plan_failed, self.budget_max
        return {
            "max": limit,
            "used": used,
            "scope": self.budget_scope,
            "onExceed": self.on_exceed,
            "exceeded": used > limit,
        }

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "strategy": self.strategy,
            "wave": self.wave,
            "waveState": self.state,
            "waves": [w.view() for w in self.waves],
        }
        if self.bake_until is not None:
            out["bakeUntil"] = self.bake_until
        budget = self.budget()
        if budget is not None:
            out["budget"] = budget
        if self.stop_reason:
            out["stopReason"] = self.stop_reason
        return out


def _int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def waves_of(plan: dict[str, str]) -> list[dict[str, Any]]:
    """Each wave of a plan hash as status shows it (public in `deployer status --json`)."""
    rollout = Rollout.from_hash(plan)
    return [w.view() for w in rollout.waves] if rollout else []


def wave_summary(store: Store, plan_id: str) -> list[dict[str, Any]]:
    """The waves of plan `plan_id` ([] for a plan without a strategy)."""
    return waves_of(store.get_plan(plan_id))


def rollout_view(plan: dict[str, str]) -> dict[str, Any]:
    """What `deployer status P --json` adds for a plan with a strategy ({} otherwise)."""
    rollout = Rollout.from_hash(plan)
    return rollout.view() if rollout else {}


__all__ = [
    "WAVE_STATES",
    "Rollout",
    "Wave",
    "WaveOutcome",
    "call_gate",
    "rollout_view",
    "wave_plan",
    "wave_summary",
    "waves_of",
]
