"""The rollout service: everything a plan's strategy does after submit — moving waves on,
approvals bound to their wave, promote, the failure budget (its override, and its rollback),
maintenance windows and gates.

One atomic script moves a plan's waves (lua/wave_step.lua, read back by deployer/waves.py);
this module decides what to tell it and does what it answers: send the chains of a wave it
started (`fill`, the planner's), hand a gate call to a bounded pool (`GateRunner`: never the
caller's thread), or roll the plan back when its failure budget says so. That rollback is
the operator's plan rollback (deployer/control.py), *injected* as `rollback` by whoever
builds the controller, so this module imports neither the planner nor the controller.

Callers: the planner (a stage that ended a wave, a submit), the controller (approve,
promote, budget, resume), and every worker's plan-timer loop (deployer/timers.py: bake ends,
window openings, gate re-checks). Any number of them may run at once; the script decides.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from deployer.errors import (
    BudgetInvalid,
    Code,
    NotFound,
    PlanHasNoStrategy,
    PlanNotAwaitingApproval,
)
from deployer.settings import Settings
from deployer.state.plans import PlanField, PlanRecord, Plans
from deployer.state.store import Store, WaveOp, WaveOutcome, now_ms
from deployer.strategy import PERCENT_PATTERN, share
from deployer.webhook import WebhookAnswer, post_json
from deployer.window import Window, window_arg

log = logging.getLogger("deployer.rollout")

#: Wave steps chained in one `advance` (a gate answer, a wave started and filled, ...).
MAX_STEPS = 8
#: What a gate call answers the wave step with at most (the excerpt kept in status/events).
GATE_ANSWER_CHARS = 200


@dataclass(frozen=True)
class GateCall:
    plan_id: str
    wave: int
    gate: str
    url: str | None


class GateRunner:
    """Gate calls, off every caller's thread: a small pool (`workers` calls at once), one
    call per plan at a time, at most `max_queued` waiting. A full pool turns a call down
    (the plan stays due and is asked again shortly); nothing a gate does can hold up a
    timer, a re-drive or another plan's gate beyond its own slot."""

    def __init__(
        self,
        answer: Callable[[GateCall, WebhookAnswer], object],
        settings: Settings,
        workers: int = 4,
        max_queued: int = 64,
    ) -> None:
        self.answer = answer
        self.settings = settings
        self.max_queued = max_queued
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="deployer-gate")
        self._inflight: set[str] = set()
        self._lock = threading.Lock()

    def submit(self, call: GateCall) -> bool:
        """Start the call unless this plan's is already out or the pool is full."""
        with self._lock:
            if call.plan_id in self._inflight or len(self._inflight) >= self.max_queued:
                return False
            self._inflight.add(call.plan_id)
        self._pool.submit(self._run, call)
        return True

    def busy(self, plan_id: str) -> bool:
        with self._lock:
            return plan_id in self._inflight

    def _run(self, call: GateCall) -> None:
        try:
            if call.url is None:
                reply = WebhookAnswer(None, error=f"no gate named {call.gate} is configured")
            else:
                reply = post_json(
                    call.url,
                    {"planId": call.plan_id, "wave": call.wave},
                    timeout=self.settings.gate_timeout_seconds,
                    max_bytes=self.settings.gate_max_answer_bytes,
                )
            self.answer(call, reply)
        except Exception:  # a pool thread must outlive any one call
            log.exception("gate %s for plan %s wave %d", call.gate, call.plan_id, call.wave)
        finally:
            with self._lock:
                self._inflight.discard(call.plan_id)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class RolloutService:
    """A plan's waves after submit. `fill` sends the chains of a wave that started;
    `rollback` (injected by the controller) rolls a plan back for its failure budget;
    `gates` runs gate calls (a worker's main process has one; elsewhere a plan that must
    ask its gate is made due at once, for a worker's loop to ask)."""

    store: Store
    settings: Settings
    fill: Callable[[str], object]
    rollback: Callable[[str], object] | None = None
    gates: GateRunner | None = None
    _windows: dict[str, Window | None] = field(default_factory=dict, repr=False)

    # ---- moving on ---------------------------------------------------------------------

    def advance(self, plan_id: str, op: WaveOp | None = None) -> WaveOutcome:
        """Run the plan's wave step with `op` and do what it asks: hand a gate call to the
        gate pool, roll back on an exceeded failure budget, send the wave it started. A
        plan without a strategy answers NONE."""
        op = op or WaveOp()
        window = self._window(plan_id)
        outcome = self.store.wave_step(plan_id, _with_window(op, window))
        for _ in range(MAX_STEPS):
            if outcome.outcome == "GATE":
                self._ask_gate(plan_id, outcome)
                break
            if outcome.outcome == "ROLLBACK":
                if self.rollback is None:  # no controller here: the plan stays due
                    log.error("plan %s: budget rollback due, no controller to run it", plan_id)
                    break
                self.rollback(plan_id)
                outcome = self.store.wave_step(plan_id, WaveOp("ROLLBACK_DONE"))
                continue
            break
        if outcome.started or outcome.outcome == "RUNNING":
            self.fill(plan_id)
        return outcome

    def _window(self, plan_id: str) -> str:
        """The window argument of the wave step ('' when the plan has none); a plan's
        strategy never changes, so it is read once per process."""
        if plan_id not in self._windows:
            plan = Plans.of(self.store).fields(plan_id, PlanField.STRATEGY)
            raw = plan.strategy if plan is not None else ""
            spec = json.loads(raw).get("window") if raw else None
            self._windows[plan_id] = Window.model_validate(spec) if spec else None
            if len(self._windows) > 10_000:  # bounded: forget the oldest plans
                for old in list(self._windows)[:1000]:
                    del self._windows[old]
        return window_arg(self._windows[plan_id], now_ms())

    def _ask_gate(self, plan_id: str, outcome: WaveOutcome) -> None:
        call = GateCall(plan_id, outcome.wave, outcome.detail,
                        self.settings.gates.get(outcome.detail))  # fmt: skip
        if self.gates is None or not self.gates.submit(call):
            # no gate pool in this process (a stage, a command), or it is full: due at
            # once, so a worker's loop asks (its pool dedupes a call already out)
            if self.gates is None or not self.gates.busy(plan_id):
                self.store.due_now(plan_id)

    def gate_answered(self, call: GateCall, reply: WebhookAnswer) -> WaveOutcome:
        """A gate call's answer, written back through the wave step (2xx starts the wave,
        anything else holds it until the re-check; a late answer for a wave no longer
        asking is dropped)."""
        if reply.ok:
            op = WaveOp("GATE_OK", wave=str(call.wave), a1=reply.outcome)
        else:
            log.info("gate %s for plan %s wave %d held it: %s", call.gate, call.plan_id,
                     call.wave, reply.outcome)  # fmt: skip
            op = WaveOp("GATE_FAIL", wave=str(call.wave), a1=reply.outcome,
                        a2=reply.excerpt(GATE_ANSWER_CHARS))  # fmt: skip
        return self.advance(call.plan_id, op)

    # ---- operator actions --------------------------------------------------------------

    def approve(self, plan_id: str, wave: int, by: str, reason: str) -> dict[str, Any]:
        """Start wave `wave` if it is the one waiting for approval (a stored decision: it
        holds even if every worker is down). Another wave waiting is a refusal naming both;
        that wave approved already is an answer in effect (a redelivered approval)."""
        self._exists(plan_id)
        outcome = self.advance(plan_id, WaveOp("APPROVE", by, reason, str(wave)))
        self._refuse_common(plan_id, outcome, "approve")
        if outcome.outcome == "WRONG_WAVE":
            raise PlanNotAwaitingApproval(
                f"plan {plan_id}: wave {wave} is not awaiting approval; wave {outcome.wave} is",
                code=Code.WAVE_NOT_AWAITING_APPROVAL,
                wave=wave,
                awaitingWave=outcome.wave,
            )
        if outcome.outcome == "ALREADY":
            return {
                "ok": True,
                "code": Code.ALREADY,
                "message": f"approve plan {plan_id}: wave {wave} was approved already "
                f"(by {outcome.detail or 'someone'})",
                "wave": wave,
            }
        if outcome.outcome == "REFUSED":
            raise PlanNotAwaitingApproval(
                f"plan {plan_id}: no wave awaits approval (wave {outcome.wave} is "
                f"{outcome.detail or 'not waiting'})",
                wave=wave,
                currentWave=outcome.wave,
            )
        return {
            "ok": True,
            "code": Code.OK,
            "message": f"approve plan {plan_id}: wave {wave} approved ({outcome.outcome.lower()})",
            "wave": wave,
            "waveState": outcome.outcome,
        }

    def awaiting_approval(self, plan_id: str) -> int | None:
        """The wave that waits for approval now, if any (what `deployer approve` without
        --wave shows the operator before approving it)."""
        plan = Plans.of(self.store).get(plan_id)
        if plan is None:
            raise NotFound(f"no plan {plan_id}", code=Code.PLAN_NOT_FOUND)
        if not plan.has_strategy:
            raise PlanHasNoStrategy(f"plan {plan_id} has no strategy: nothing to approve")
        if plan.wave_state != "AWAITING_APPROVAL":
            return None
        return plan.wave or 0

    def promote(
        self,
        plan_id: str,
        wave: int | None,
        all_waves: bool,
        approve: bool,
        by: str,
        reason: str,
    ) -> dict[str, Any]:
        """End the current wave's bake now (or skip it when it comes); `all_waves`: every
        later wave's bake too. A wave that waits for approval is promoted only with
        `approve` (recorded as its approval); `all_waves` + `approve` approves the later
        ones too. Gates and windows still hold: they are outside checks, not waits."""
        self._exists(plan_id)
        plan = Plans.of(self.store).fields(plan_id, PlanField.WAVE)
        current = (plan.wave if plan is not None else None) or 0
        promoted = wave if wave is not None else current
        op = WaveOp("PROMOTE", by, reason, "" if wave is None else str(wave),
                    a1="1" if all_waves else "0", a2="1" if approve else "0")  # fmt: skip
        outcome = self.advance(plan_id, op)
        self._refuse_common(plan_id, outcome, "promote")
        if outcome.outcome == "WRONG_WAVE":
            raise PlanNotAwaitingApproval(
                f"plan {plan_id}: wave {wave} is not the current wave; wave {outcome.wave} is "
                f"({outcome.detail})",
                code=Code.WAVE_NOT_CURRENT,
                wave=wave,
                currentWave=outcome.wave,
            )
        if outcome.outcome == "APPROVAL_REQUIRED":
            raise PlanNotAwaitingApproval(
                f"plan {plan_id}: wave {outcome.wave} awaits approval; promote --approve "
                f"approves it too (or approve --plan {plan_id} --wave {outcome.wave})",
                code=Code.APPROVAL_REQUIRED,
                wave=outcome.wave,
            )
        if outcome.outcome == "NOTHING":
            raise PlanNotAwaitingApproval(
                f"plan {plan_id}: its waves are {outcome.detail}: nothing to promote",
                code=Code.NOTHING_TO_PROMOTE,
            )
        scope = f"wave {promoted}'s bake" + (" and every later one's" if all_waves else "")
        paused = outcome.outcome == "PAUSED"
        note = " (the plan is paused: it goes on when resumed)" if paused else ""
        return {
            "ok": True,
            "code": Code.OK,
            "message": f"promote plan {plan_id}: {scope} skipped; now wave {outcome.wave} "
            f"{outcome.outcome}{note}",
            "wave": outcome.wave,
            "waveState": outcome.outcome,
        }

    def set_budget(
        self, plan_id: str, maximum: int | str | None, reset: bool, by: str, reason: str
    ) -> dict[str, Any]:
        """Raise, lower or reset the plan's failure budget (`maximum`: a count or a share
        of the plan's — scope wave: of each remaining wave's — tenants; `reset`: the
        failures so far no longer count). Recorded (BUDGET_CHANGED); the plan is not
        resumed here (`resume --budget` does both)."""
        plan = Plans.of(self.store).get(plan_id)
        if plan is None:
            raise NotFound(f"no plan {plan_id}", code=Code.PLAN_NOT_FOUND)
        if not plan.has_strategy:
            raise PlanHasNoStrategy(f"plan {plan_id} has no strategy: no failure budget")
        if maximum is None and not reset:
            raise BudgetInvalid("give a new maximum, a reset, or both")
        limits = "" if maximum is None else json.dumps(_limits(plan, maximum))
        op = WaveOp("BUDGET", by, reason, a1=limits, a2="1" if reset else "0")
        outcome = self.store.wave_step(plan_id, op)
        self._refuse_common(plan_id, outcome, "budget")
        if outcome.outcome == "NO_BUDGET":
            raise PlanNotAwaitingApproval(
                f"plan {plan_id} has no failure budget", code=Code.NO_FAILURE_BUDGET
            )
        what = f"max {outcome.detail}" if maximum is not None else "unchanged max"
        return {
            "ok": True,
            "code": Code.OK,
            "message": f"budget of plan {plan_id}: {what}"
            f"{', failures so far forgiven' if reset else ''}",
            "budget": int(outcome.detail) if outcome.detail.isdigit() else outcome.detail,
        }

    def halt(self, plan_id: str, by: str, reason: str) -> WaveOutcome:
        """End the plan's waves (a plan rollback): no later wave starts, and no tenant that
        never started does either."""
        return self.store.wave_step(plan_id, WaveOp("HALT", by, reason))

    def _exists(self, plan_id: str) -> None:
        if not self.store.plan_exists(plan_id):
            raise NotFound(f"no plan {plan_id}", code=Code.PLAN_NOT_FOUND)

    @staticmethod
    def _refuse_common(plan_id: str, outcome: WaveOutcome, command: str) -> None:
        if outcome.outcome == "NONE":
            raise PlanHasNoStrategy(f"plan {plan_id} has no strategy: nothing to {command}")
        if outcome.outcome == "ROLLING_BACK":
            raise PlanNotAwaitingApproval(
                f"plan {plan_id}: its failure budget's rollback is under way",
                code=Code.PLAN_ROLLING_BACK,
            )


def _with_window(op: WaveOp, window: str) -> WaveOp:
    return WaveOp(op.op, op.by, op.reason, op.wave, window, op.a1, op.a2)


_PERCENT = re.compile(PERCENT_PATTERN)


def parse_budget(value: Any) -> int | str:
    """A budget maximum as given (CLI, task kwarg, API): a count ≥ 0 or a share "5%"."""
    if isinstance(value, bool):
        raise BudgetInvalid('budget: a count or a share like "5%", not a boolean')
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        if _PERCENT.match(text):
            return text
    raise BudgetInvalid(f'budget: {value!r} is not a count (0, 1, ...) or a share like "5%"')


def _limits(plan: PlanRecord, maximum: int | str) -> dict[str, Any]:
    """The wave step's budget argument: the plan's limit, or each remaining wave's."""
    if plan.budget_scope == "wave":
        current = plan.wave or 0
        return {
            "waves": {
                str(w.index): share(maximum, w.tenants, round_up=False)
                for w in plan.wave_records()[current:]
            }
        }
    return {"plan": share(maximum, plan.total or 0, round_up=False)}


__all__ = ["GateCall", "GateRunner", "RolloutService", "parse_budget"]
