"""Operator commands (pause, resume, cancel, retry, rollback) for a tenant or a whole plan.

Each task's command is decided by `lifecycle.decide` and applied by one compare-and-set
script; if a stage changed the status in between, the command is decided again. Runs
that a command makes ready (resume, retry, rollback) go to the front of their plan's
queue and start through the same slot-filling path as a new plan.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from deployer.errors import (
    DeployerError,
    IllegalTransition,
    NotFound,
    PermanentError,
    PlanHasNoStrategy,
    PlanNotAwaitingApproval,
)
from deployer.lifecycle import Command, Decision, Effect, decide
from deployer.models import Task, TaskRuntimeContext, TaskStatus, TenantConfig, is_id
from deployer.planner import Planner, prepare_retry, prepare_rollback
from deployer.store import Store

TASK_FIELDS = [
    "taskId", "planId", "tenantId", "status", "control", "retryCount", "checkpoint", "startedAt"
]  # fmt: skip
MAX_CAS_ATTEMPTS = 5


class TargetInvalid(PermanentError):
    code = "TARGET_INVALID"


@dataclass(frozen=True)
class Target:
    plan_id: str | None = None
    tenant_id: str | None = None

    @classmethod
    def parse(cls, raw: Any) -> Target:
        """`{"planId": P}` or `{"tenantId": T}` (a JSON string is accepted too)."""
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                raise TargetInvalid('target must be {"planId": ...} or {"tenantId": ...}') from None
        if not isinstance(raw, dict) or len(raw) != 1 or not ({"planId", "tenantId"} & set(raw)):
            raise TargetInvalid('target must be exactly one of {"planId": ...}, {"tenantId": ...}')
        ((name, value),) = raw.items()
        if isinstance(value, int) and not isinstance(value, bool) and name == "planId":
            value = str(value)
        if not is_id(value):
            raise TargetInvalid(f"{name}: not a valid id")
        return cls(plan_id=value) if name == "planId" else cls(tenant_id=value)

    def describe(self) -> str:
        return f"plan {self.plan_id}" if self.plan_id else f"tenant {self.tenant_id}"


PLAN_FLAG = {Command.PAUSE: "PAUSE", Command.CANCEL: "CANCEL"}
EVENT = {
    (Command.PAUSE, Effect.NOW): "TASK_PAUSED",
    (Command.PAUSE, Effect.REQUEST): "TASK_PAUSE_REQUESTED",
    (Command.RESUME, Effect.NOW): "TASK_RESUMED",
    (Command.RESUME, Effect.WITHDRAW): "TASK_RESUMED",
    (Command.CANCEL, Effect.NOW): "TASK_CANCELLED",
    (Command.CANCEL, Effect.REQUEST): "TASK_CANCEL_REQUESTED",
    (Command.RETRY, Effect.NOW): "TASK_RETRY",
    (Command.ROLLBACK, Effect.NOW): "TASK_ROLLBACK",
}


#: How an immediate (NOW) change is written: queue op, new token (fence off anything in
#: flight, release lease and slot), pending control flag.
IMMEDIATE: dict[Command, tuple[str, bool, str]] = {
    Command.PAUSE: ("REMOVE", True, ""),
    Command.CANCEL: ("REMOVE", True, "CLEAR"),
    Command.RESUME: ("FRONT", False, "CLEAR"),
    Command.RETRY: ("FRONT", True, "CLEAR"),
    Command.ROLLBACK: ("FRONT", True, "CLEAR"),
}


@dataclass
class Controller:
    planner: Planner

    @property
    def store(self) -> Store:
        return self.planner.store

    def execute(
        self,
        command: Command,
        raw_target: Any,
        by: str | None = None,
        reason: str | None = None,
        from_checkpoint: bool = False,
    ) -> dict[str, Any]:
        target = Target.parse(raw_target)
        by, reason = (by or "")[:200], (reason or "")[:1000]
        if command is Command.APPROVE:
            return self._approve(target, by, reason)
        tasks = self._resolve(target)
        outcomes: Counter[str] = Counter()
        refused: list[dict[str, str]] = []
        notes: list[str] = []
        plans: set[str] = set()
        waved = bool(target.plan_id and self.store.get_plan_field(target.plan_id, "strategy"))
        if waved and command is Command.ROLLBACK:
            tasks = self._end_waves(target.plan_id or "", tasks, by, reason)
        if target.plan_id:
            flag = PLAN_FLAG.get(command, "")
            event = f"PLAN_{command.value.upper()}"
            self.store.plan_control(target.plan_id, flag, by, reason, event)
        for task in tasks:
            if command is Command.ROLLBACK and target.plan_id and not task.get("startedAt"):
                # A whole-plan rollback covers the tasks that changed something.
                refused.append(
                    {
                        "tenantId": task["tenantId"],
                        "code": "TASK_NEVER_STARTED",
                        "message": "nothing to roll back",
                    }
                )
                continue
            decision = self._apply(command, task, by, reason, from_checkpoint)
            outcomes[decision.effect.value] += 1
            if decision.effect is Effect.REFUSE:
                refused.append(
                    {"tenantId": task["tenantId"], "code": decision.code, "message": decision.note}
                )
            elif decision.note:
                notes.append(decision.note)
            if decision.effect is Effect.NOW:
                plans.add(task["planId"])
        for plan_id in sorted(plans):
            self.planner.dispatch(plan_id)
        if waved and target.plan_id and command is not Command.ROLLBACK:
            # resume continues the current wave (and a bake that ended meanwhile), cancel
            # ends the waves: the wave step sees the plan's new control flag. (A rollback
            # ended them already; the failure budget's rollback runs inside a wave step.)
            self.planner.advance(target.plan_id)
        return self._answer(command, target, outcomes, refused, notes)

    def _approve(self, target: Target, by: str, reason: str) -> dict[str, Any]:
        """Start the plan's wave that waits for approval (a stored decision: it holds even
        if every worker is down; they send the wave's chains when they are back)."""
        if not target.plan_id:
            raise TargetInvalid('approve takes a plan: {"planId": ...}')
        if not self.store.plan_exists(target.plan_id):
            raise NotFound(f"no plan {target.plan_id}", code="PLAN_NOT_FOUND")
        outcome = self.planner.advance(target.plan_id, "APPROVE", by, reason)
        if outcome.outcome == "NONE":
            raise PlanHasNoStrategy(f"plan {target.plan_id} has no strategy: nothing to approve")
        if outcome.outcome == "REFUSED":
            raise PlanNotAwaitingApproval(
                f"plan {target.plan_id}: wave {outcome.wave} is {outcome.gate or 'not waiting'}"
                ", not awaiting approval"
            )
        return {
            "ok": True,
            "code": "OK",
            "message": f"approve plan {target.plan_id}: wave {outcome.wave} approved "
            f"({outcome.outcome.lower()})",
            "wave": outcome.wave,
            "waveState": outcome.outcome,
        }

    def _end_waves(
        self,
        plan_id: str,
        tasks: list[dict[str, str]],
        by: str,
        reason: str,
    ) -> list[dict[str, str]]:
        """A rollback of a plan with waves ends them: no later wave starts, tenants that never
        started are cancelled (their old config is still live), and the started ones roll
        back newest first (each goes to the front of the queue, the newest last)."""
        self.store.wave_step(plan_id, "HALT", by, reason or "plan rolled back")
        started: list[dict[str, str]] = []
        for task in tasks:
            if task.get("startedAt"):
                started.append(task)
            elif task["status"] in ("PENDING", "PAUSED"):
                self._apply(
                    Command.CANCEL, task, by, "plan rolled back before this tenant started", False
                )
        return sorted(started, key=lambda t: int(t.get("startedAt") or 0))

    def _answer(
        self,
        command: Command,
        target: Target,
        outcomes: Counter[str],
        refused: list[dict[str, str]],
        notes: list[str],
    ) -> dict[str, Any]:
        acted = outcomes[Effect.NOW] + outcomes[Effect.REQUEST] + outcomes[Effect.WITHDRAW]
        done = acted + outcomes[Effect.ALREADY]
        counts = {k: v for k, v in outcomes.items() if v}
        if target.tenant_id:
            if refused:
                return {"ok": False, **refused[0], "counts": counts}
            code = "OK" if acted else "ALREADY"
            message = f"{command.value} {target.describe()}: {notes[0] if notes else 'done'}"
            return {"ok": True, "code": code, "message": message, "counts": counts}
        if done == 0 and refused:
            code = Counter(r["code"] for r in refused).most_common(1)[0][0]
            return {
                "ok": False,
                "code": code,
                "counts": counts,
                "refused": refused[:50],
                "message": f"{command.value} {target.describe()}: no task allows it ({code})",
            }
        return {
            "ok": True,
            "code": "OK" if acted else "ALREADY",
            "message": f"{command.value} {target.describe()}: {acted} task(s) acted on, "
            f"{outcomes[Effect.ALREADY]} already so, {len(refused)} skipped",
            "counts": counts,
            "skipped": refused[:50],
        }

    def _resolve(self, target: Target) -> list[dict[str, str]]:
        if target.tenant_id:
            task_id = self.store.task_id_for_tenant(target.tenant_id)
            if not task_id:
                raise NotFound(f"no task for tenant {target.tenant_id}", code="TASK_NOT_FOUND")
            ids = [task_id]
        else:
            assert target.plan_id is not None
            if not self.store.plan_exists(target.plan_id):
                raise NotFound(f"no plan {target.plan_id}", code="PLAN_NOT_FOUND")
            ids = self.store.plan_task_ids(target.plan_id)
        return [t for t in self.store.get_tasks_raw(ids, TASK_FIELDS) if t["status"]]

    def _apply(
        self, command: Command, task: dict[str, str], by: str, reason: str, from_checkpoint: bool
    ) -> Decision:
        for _ in range(MAX_CAS_ATTEMPTS):
            decision = decide(command, TaskStatus(task["status"]), task.get("control"))
            if decision.effect in (Effect.ALREADY, Effect.REFUSE):
                return decision
            try:
                applied, _current = self._write(
                    command, decision, task, by, reason, from_checkpoint
                )
            except DeployerError as exc:
                return Decision(Effect.REFUSE, code=exc.code, note=exc.message)
            if applied:
                return decision
            task = self.store.get_tasks_raw([task["taskId"]], TASK_FIELDS)[0]
        return Decision(Effect.REFUSE, code="TASK_BUSY", note="status kept changing; try again")

    def _write(
        self,
        command: Command,
        decision: Decision,
        task: dict[str, str],
        by: str,
        reason: str,
        from_checkpoint: bool,
    ) -> tuple[bool, str]:
        event = EVENT[(command, decision.effect)]
        common: dict[str, Any] = {"by": by, "reason": reason, "event": event}
        if decision.effect is Effect.REQUEST:
            return self.store.task_command(task, control=PLAN_FLAG[command], **common)
        if decision.effect is Effect.WITHDRAW:
            return self.store.task_command(task, control="CLEAR", **common)
        status = decision.to.value if decision.to else ""
        queue_op, invalidate, control = IMMEDIATE[command]
        fields: dict[str, str | int] | None = None
        if command is Command.RETRY:
            fields = self._retry_fields(task, from_checkpoint)
            common["reason"] = reason or f"fromCheckpoint={str(from_checkpoint).lower()}"
        elif command is Command.ROLLBACK:
            fields = self._rollback_fields(task)
        return self.store.task_command(
            task,
            new_status=status,
            queue_op=queue_op,
            invalidate=invalidate,
            control=control,
            fields=fields,
            **common,
        )

    def _retry_fields(self, task: dict[str, str], from_checkpoint: bool) -> dict[str, str | int]:
        retries = int(task.get("retryCount") or 0)
        limit = self.planner.settings.max_retries
        if retries >= limit:
            raise IllegalTransition(
                f"retried {retries} time(s); the limit is {limit}", code="RETRY_LIMIT_REACHED"
            )
        raw = self.store.get_task_raw(task["taskId"])
        run = self.planner.stored_run(raw)
        checkpoint = int(raw.get("checkpoint") or -1)
        ctx = TaskRuntimeContext.model_validate_json(raw["ctx"]) if raw.get("ctx") else run.context
        retried = prepare_retry(run, ctx, checkpoint, from_checkpoint)
        fields: dict[str, str | int] = {
            "ctx": retried.context.model_dump_json(by_alias=True),
            "checkpoint": checkpoint if from_checkpoint else -1,
            "retryCount": retries + 1,
            "lastError": "",
        }
        if not raw.get("run"):  # failed before its first run was stored: store it now
            fields["run"] = run.model_dump_json(by_alias=True)
        return fields

    def _rollback_fields(self, task: dict[str, str]) -> dict[str, str | int]:
        raw = self.store.get_task_raw(task["taskId"])
        config = TenantConfig.model_validate_json(raw["config"])
        model = Task(
            task_id=raw["taskId"],
            plan_id=raw["planId"],
            tenant_id=raw["tenantId"],
            status=TaskStatus(raw["status"]),
            config=config,
            # tasks stored before configs carried their snapshot had a field of its own
            prev_config=TenantConfig.model_validate_json(raw["prevConfig"])
            if raw.get("prevConfig")
            else config.previous_config,
        )
        run = prepare_rollback(model, self.planner.stored_run(raw), self.planner.settings)
        return {
            "run": run.model_dump_json(by_alias=True),
            "ctx": run.context.model_dump_json(by_alias=True),
            "runId": run.run_id,
            "runKind": run.kind.value,
            "checkpoint": -1,
            "totalStages": len(run.stages),
            "retryCount": 0,
            "lastError": "",
        }


__all__ = ["Command", "Controller", "Target", "TargetInvalid"]
