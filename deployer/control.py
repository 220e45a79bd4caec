"""Operator commands (pause, resume, cancel, retry, rollback) for a tenant or a whole plan,
and the wave commands (approve, promote, budget) that the rollout service answers.

Each task's command is decided by `lifecycle.decide` and applied by one compare-and-set
script; if a stage changed the status in between, the command is decided again. Runs
that a command makes ready (resume, retry, rollback) go to their plan's queue and start
through the same slot-filling path as a new plan. A command for a whole plan sets the plan's
flag at once and works through its tasks in bounded slices (deployer/plan_commands.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import redis

from deployer import audit
from deployer.command_rules import (
    SUPERSEDED,
    SUPERSEDED_STATUS,
    TARGET_SHAPES,
    TASK_FIELDS,
    WAVE_SHAPES,
    Target,
    Write,
    as_written,
    decide_task,
    unrestored_answer,
)
from deployer.context import Unrestored
from deployer.errors import (
    Code,
    DeployerError,
    IllegalTransition,
    NotFound,
    TargetInvalid,
    WaveRequired,
)
from deployer.lifecycle import WAVE_COMMANDS, Command, Decision, Effect
from deployer.models import task_id_for
from deployer.plan_commands import PlanCommands
from deployer.planner import Planner, prepare_retry, prepare_rollback
from deployer.rollout import RolloutService, parse_budget
from deployer.state.commands import Commands, QueueOp, TaskCommand, TaskVerdict, TaskWritten
from deployer.state.record import Field as F
from deployer.state.record import TaskRecord
from deployer.state.store import Store

log = logging.getLogger("deployer.control")

MAX_CAS_ATTEMPTS = 5


PLAN_FLAG = {Command.PAUSE: "PAUSE", Command.CANCEL: "CANCEL"}
#: Task-level commands that queue a run: under a paused or cancelled plan it would never start.
STARTS_A_RUN = frozenset({Command.RESUME, Command.RETRY, Command.ROLLBACK})
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


ACTING = (Effect.NOW, Effect.REQUEST, Effect.WITHDRAW)


def resume_order(tasks: list[TaskRecord]) -> list[TaskRecord]:
    """The order to resume tasks in, so that the queue ends up holding the tenants paused
    mid-flight (a stage had started: they hold half-applied work) before those never
    started, each group in submission order. Every resumed task is pushed to the queue's
    front, so the wanted queue order is applied back to front."""
    mid_flight = [t for t in tasks if t.started]
    never = [t for t in tasks if not t.started]
    return list(reversed(mid_flight + never))


#: How an immediate (NOW) change is written: queue op, new token (fence off anything in
#: flight, release lease and slot), pending control flag.
IMMEDIATE: dict[Command, tuple[QueueOp, bool, str]] = {
    Command.PAUSE: ("REMOVE", True, ""),
    Command.CANCEL: ("REMOVE", True, "CLEAR"),
    Command.RESUME: ("FRONT", False, "CLEAR"),
    Command.RETRY: ("FRONT", True, "CLEAR"),
    Command.ROLLBACK: ("FRONT", True, "CLEAR"),
}


@dataclass
class Controller:
    planner: Planner

    def __post_init__(self) -> None:
        # the rollout service rolls a plan back for its failure budget through this
        # controller's plan rollback: injected here, so it never imports the controller
        self.rollout.rollback = self.budget_rollback
        self.commands = Commands(self.store.r, self.store.settings)
        self.plans = PlanCommands(self)

    @property
    def store(self) -> Store:
        return self.planner.store

    @property
    def rollout(self) -> RolloutService:
        return self.planner.rollout

    def execute(
        self,
        command: Command,
        raw_target: Any,
        by: str | None = None,
        reason: str | None = None,
        from_checkpoint: bool = False,
        force: bool = False,
        strict: bool = False,
        *,
        all_waves: bool = False,
        approve: bool = False,
        budget: Any = None,
        reset: bool = False,
        budget_seconds: float | None = None,
    ) -> dict[str, Any]:
        """`force` (resume, retry, rollback): the runs may apply their config even where a
        newer task deployed the tenant since (else they end SUPERSEDED); recorded in the
        events. `strict` (rollback): refuse a task's rollback that cannot restore every
        service the forward run changed (ROLLBACK_INCOMPLETE) instead of naming them in the
        answer. `all_waves`, `approve` (promote), `budget`, `reset` (budget, resume) shape
        the wave commands. A plan command answers once its flag is set and as many slices
        of its tasks as fit in `budget_seconds` are done (the rest follow in the
        background)."""
        target = Target.parse(raw_target, waves=command in (Command.APPROVE, Command.PROMOTE))
        by, reason = (by or "")[:200], (reason or "")[:1000]
        try:
            if command in WAVE_COMMANDS:
                answer = self._wave_command(command, target, by, reason, all_waves, approve,
                                            budget, reset)  # fmt: skip
            elif target.is_plan:
                assert target.plan_id is not None
                if command is Command.RESUME and (budget is not None or reset):
                    self._budget(target, by, reason, budget, reset)
                answer = self.plans.run(command, target.plan_id, by, reason, force,
                                        from_checkpoint, budget_seconds, strict)  # fmt: skip
            else:
                answer = self._execute(command, target, by, reason, from_checkpoint, force,
                                       strict)  # fmt: skip
        except DeployerError as exc:
            answer = exc.as_result()
        if not answer["ok"]:
            self._record_refusal(command, target, by, reason, answer)
        elif target.is_plan and target.plan_id and command not in (Command.ROLLBACK,
                                                                   *WAVE_COMMANDS):  # fmt: skip
            # a plan with waves: resume continues the current wave (and a bake that ended
            # meanwhile), cancel ends the waves; the wave step sees the plan's control flag
            # (a plan rollback ended them already; the budget's rollback runs inside a step)
            self.rollout.advance(target.plan_id)
        return answer

    def budget_rollback(self, plan_id: str) -> dict[str, Any]:
        """onExceed rollback: every tenant this plan started goes back to its previous
        config through the operator's plan rollback, newest first; a tenant a newer task
        deployed since is left alone (SUPERSEDED). Called from a wave step, so it answers
        soon and leaves the slices to the plan-timer loops."""
        result = self.execute(
            Command.ROLLBACK,
            {"planId": plan_id},
            by="failure-budget",
            reason="failure budget exceeded",
            budget_seconds=0.2,
        )
        log.warning("plan %s: failure budget exceeded, rollback: %s", plan_id, result["message"])
        return result

    # ---- wave commands (deployer/rollout.py) ---------------------------------------------

    def _wave_command(
        self,
        command: Command,
        target: Target,
        by: str,
        reason: str,
        all_waves: bool,
        approve: bool,
        budget: Any,
        reset: bool,
    ) -> dict[str, Any]:
        if not target.is_plan or not target.plan_id:
            raise TargetInvalid(f'{command.value} takes a plan: {{"planId": ...}}')
        plan_id = target.plan_id
        if command is Command.APPROVE:
            if target.wave is None:
                waiting = self.rollout.awaiting_approval(plan_id)
                where = f"wave {waiting} awaits approval" if waiting is not None else (
                    "no wave awaits approval now")  # fmt: skip
                raise WaveRequired(
                    f'approve names the wave it approves: {{"planId": "{plan_id}", "wave": N}} '
                    f"({where})"
                )
            return self.rollout.approve(plan_id, target.wave, by, reason)
        if command is Command.PROMOTE:
            return self.rollout.promote(plan_id, target.wave, all_waves, approve, by, reason)
        return self._budget(target, by, reason, budget, reset)

    def _budget(
        self, target: Target, by: str, reason: str, budget: Any, reset: bool
    ) -> dict[str, Any]:
        assert target.plan_id is not None
        maximum = None if budget is None else parse_budget(budget)
        return self.rollout.set_budget(target.plan_id, maximum, reset, by, reason)

    # ---- one tenant's task ----------------------------------------------------------------

    def _execute(
        self,
        command: Command,
        target: Target,
        by: str,
        reason: str,
        from_checkpoint: bool,
        force: bool = False,
        strict: bool = False,
    ) -> dict[str, Any]:
        task = self._resolve(target)
        if command in STARTS_A_RUN:
            self._refuse_if_plan_halted(command, task, force)
        decision = self.apply(command, task, by, reason, from_checkpoint, force, strict=strict)
        outcomes: Counter[str] = Counter()
        refused: list[dict[str, str]] = []
        notes: list[str] = []
        outcomes[decision.effect.value if decision.to is not SUPERSEDED_STATUS else SUPERSEDED] += 1
        if decision.effect is Effect.REFUSE:
            refused.append(
                {"tenantId": task.tenant_id, "code": decision.code, "message": decision.note}
            )
        elif decision.note:
            notes.append(decision.note)
        if decision.effect is Effect.NOW:
            self.planner.dispatch(task.plan_id)
        answer = self.answer(command, target, outcomes, refused, notes)
        unrestored = [{"tenantId": task.tenant_id, **u.wire()} for u in decision.unrestored]
        if unrestored and answer["ok"]:
            answer.update(unrestored_answer(target, unrestored, answer["message"]))
        return answer

    def _refuse_if_plan_halted(self, command: Command, task: TaskRecord, force: bool) -> None:
        """A tenant's run queued under a plan-wide PAUSE or CANCEL flag would wait forever
        (no slot is filled and a stage start obeys the flag): refuse it, naming the way on."""
        if decide_task(command, task, force).effect is not Effect.NOW:
            return
        plan_id = task.plan_id
        flag = self.commands.plan_flag(plan_id)
        if flag == "CANCEL":
            raise IllegalTransition(
                f"plan {plan_id} was cancelled: a {command.value} of one of its tenants would "
                f"never start; roll the plan back instead (rollback --plan {plan_id})",
                code=Code.PLAN_CANCELLED,
            )
        if flag == "PAUSE":
            raise IllegalTransition(
                f"plan {plan_id} is paused: a {command.value} of one of its tenants would wait "
                f"for it; resume the plan first (resume --plan {plan_id})",
                code=Code.PLAN_PAUSED,
            )

    def preview(self, command: Command, task: TaskRecord, force: bool = False) -> Decision:
        """What a plan command would do to `task` as last read (nothing is written): a
        whole-plan rollback covers the tasks that changed something."""
        if command is Command.ROLLBACK and not task.started_at:
            return Decision(
                Effect.REFUSE, code=Code.TASK_NEVER_STARTED, note="nothing to roll back"
            )
        return decide_task(command, task, force)

    def refusal(self, command: Command, task: TaskRecord, force: bool = False) -> dict[str, str]:
        decision = self.preview(command, task, force)
        return {"tenantId": task.tenant_id, "code": decision.code, "message": decision.note}

    def record_plan_command(
        self,
        command: Command,
        target: Target,
        by: str,
        reason: str,
        answer: dict[str, Any],
        skipped: int,
    ) -> None:
        """PLAN_<COMMAND>, recorded once the plan's tasks were decided, with what it did."""
        counts = answer.get("counts", {})
        audit.record(
            self.store.r,
            {
                "type": f"PLAN_{command.value.upper()}",
                "planId": target.plan_id,
                "by": by,
                "reason": reason,
                "acted": sum(counts.get(e.value, 0) for e in ACTING),
                "already": counts.get(Effect.ALREADY.value, 0),
                "skipped": skipped,
            },
            self.store.settings,
        )

    def _record_refusal(
        self, command: Command, target: Target, by: str, reason: str, answer: dict[str, Any]
    ) -> None:
        """A refused command is recorded as a refusal (COMMAND_REFUSED), never as done."""
        try:
            plan_id = target.plan_id or self._latest_plan(target.tenant_id)
            tenant_id = target.tenant_id
            if answer.get("code") in (Code.PLAN_NOT_FOUND, Code.TASK_NOT_FOUND):
                plan_id = tenant_id = None  # no history for ids that name nothing
            fields: dict[str, Any] = {
                "type": "COMMAND_REFUSED",
                "command": command.value,
                "code": answer.get("code", ""),
                "target": target.describe(),
                "planId": plan_id,
                "tenantId": tenant_id,
                "by": by,
                "reason": reason,
                "message": str(answer.get("message", ""))[:500],
            }
            # a wave command's refusal says which wave it named and which one waits
            for name in ("wave", "awaitingWave", "currentWave"):
                if isinstance(answer.get(name), int):
                    fields[name] = answer[name]
            audit.record(self.store.r, fields, self.store.settings)
        except redis.RedisError:  # the refusal is still answered; the audit line is lost
            log.warning("could not record refused %s of %s", command.value, target.describe())

    def _latest_plan(self, tenant_id: str | None) -> str | None:
        """The plan of the tenant's latest task: a refusal is filed in the tenant's history
        through it (tenant references point into plan streams)."""
        task_id = self.store.task_id_for_tenant(tenant_id) if tenant_id else None
        plan_id = self.store.get_tasks([task_id], (F.PLAN_ID,))[0].plan_id if task_id else None
        return plan_id or None

    def answer(
        self,
        command: Command,
        target: Target,
        outcomes: Counter[str],
        refused: list[dict[str, str]],
        notes: list[str],
        skipped: int | None = None,
    ) -> dict[str, Any]:
        """The answer to a command from what it did (`skipped`: how many tasks it left
        alone, when more than the `refused` listed)."""
        acted = outcomes[Effect.NOW] + outcomes[Effect.REQUEST] + outcomes[Effect.WITHDRAW]
        superseded = outcomes[SUPERSEDED]
        done = acted + outcomes[Effect.ALREADY] + superseded
        counts = {k: v for k, v in outcomes.items() if v}
        left = (
            f"; {superseded} superseded (a newer task deployed the tenant since: left alone; "
            f"--force {command.value}s it anyway)"
            if superseded
            else ""
        )
        if not target.is_plan:
            if refused:
                return {"ok": False, **refused[0], "counts": counts}
            code: str = Code.OK if acted or superseded else Code.ALREADY
            what = notes[0] if notes else ("superseded" if superseded else "done")
            message = f"{command.value} {target.describe()}: {what}{left}"
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
            "code": Code.OK if acted or superseded else Code.ALREADY,
            "message": f"{command.value} {target.describe()}: {acted} task(s) acted on, "
            f"{outcomes[Effect.ALREADY]} already so, "
            f"{len(refused) if skipped is None else skipped} skipped{left}",
            "counts": counts,
            "skipped": refused[:50],
        }

    def _resolve(self, target: Target) -> TaskRecord:
        """The task a tenant command decides on (TASK_FIELDS), with a readable status."""
        if target.plan_id and target.tenant_id:
            ids = [task_id_for(target.plan_id, target.tenant_id)]
            found = [t for t in self.store.get_tasks(ids, TASK_FIELDS) if t.status]
            if not found:
                raise NotFound(f"no task for {target.describe()}", code=Code.TASK_NOT_FOUND)
            return found[0]
        assert target.tenant_id is not None
        task_id = self.store.task_id_for_tenant(target.tenant_id)
        found = [t for t in self.store.get_tasks([task_id], TASK_FIELDS) if t.status] if (
            task_id) else []  # fmt: skip
        if not found:
            raise NotFound(f"no task for tenant {target.tenant_id}", code=Code.TASK_NOT_FOUND)
        return found[0]

    def apply(
        self,
        command: Command,
        task: TaskRecord,
        by: str,
        reason: str,
        from_checkpoint: bool,
        force: bool = False,
        queue_op: QueueOp | None = None,
        *,
        strict: bool = False,
    ) -> Decision:
        """Decide and write one task's part, again while its status keeps changing (CAS).
        `queue_op` overrides the queue operation of an immediate change (a plan command's
        slices push without scanning the queue). A rollback applied says which services it
        cannot restore (`Decision.unrestored`, and a ROLLBACK_INCOMPLETE event)."""
        for _ in range(MAX_CAS_ATTEMPTS):
            decision = decide_task(command, task, force)
            if decision.effect in (Effect.ALREADY, Effect.REFUSE):
                return decision
            try:
                write = self.task_command(command, decision, task, by, reason, from_checkpoint,
                                          force, queue_op, strict=strict)  # fmt: skip
            except DeployerError as exc:
                return Decision(Effect.REFUSE, code=exc.code, note=exc.message)
            written = self.commands.task_commands([write.command])[0]
            if written.applied:
                return self.written(decision, written, task, write.unrestored, by)
            if written.verdict is TaskVerdict.ARCHIVING:
                return Decision(Effect.REFUSE, code=Code.TASK_BUSY,
                                note="its plan is being archived (retention); try again in a "
                                "moment")  # fmt: skip
            task = self.store.get_tasks([task.task_id], TASK_FIELDS)[0]
        return Decision(Effect.REFUSE, code=Code.TASK_BUSY, note="status kept changing; try again")

    def task_command(
        self,
        command: Command,
        decision: Decision,
        task: TaskRecord,
        by: str,
        reason: str,
        from_checkpoint: bool,
        force: bool = False,
        queue_op: QueueOp | None = None,
        stored: TaskRecord | None = None,
        *,
        strict: bool = False,
    ) -> Write:
        """The write of one task's decided command (`stored`: its whole hash, when the
        caller read it already), with a rollback's services it cannot restore. Raises a
        DeployerError when the run cannot be prepared (or, `strict`, not restore all)."""
        event = EVENT[(command, decision.effect)]
        # resume, retry and rollback say, on the task, whether the run may apply its config
        # over a newer task's (stage_begin.lua reads it when the run takes the tenant).
        forced: dict[str, str] = {}
        if command in STARTS_A_RUN:
            forced = TaskRecord(force="1" if force else "0").to_hash([F.FORCE])
            if force:
                reason = f"forced{': ' + reason if reason else ''}"
        if decision.effect is Effect.REQUEST:
            return Write(TaskCommand(task, event, control=PLAN_FLAG[command], by=by, reason=reason))
        if decision.effect is Effect.WITHDRAW:
            return Write(TaskCommand(task, event, control="CLEAR", by=by, reason=reason,
                                     fields=forced or None))  # fmt: skip
        status = decision.to.value if decision.to else ""
        default_op, invalidate, control = IMMEDIATE[command]
        fields: dict[str, str] | None = forced or None
        unrestored: list[Unrestored] = []
        if command is Command.RETRY:
            fields = {**self._retry_fields(task, from_checkpoint, stored), **forced}
            plain = f"fromCheckpoint={str(from_checkpoint).lower()}"
            reason = f"forced: {reason or plain}" if force else (reason or plain)
        elif command is Command.ROLLBACK:
            rollback, unrestored = self._rollback_fields(task, stored, strict)
            fields = {**rollback, **forced}
        return Write(
            TaskCommand(
                task,
                event,
                new_status=status,
                control=control,
                queue_op=default_op if queue_op is None else queue_op,
                invalidate=invalidate,
                by=by,
                reason=reason,
                fields=fields,
                # whose tenant is it? a rollback never writes over a newer task's deployment
                check_newer=command is Command.ROLLBACK and not force,
            ),
            unrestored,
        )

    def _retry_fields(
        self, task: TaskRecord, from_checkpoint: bool, stored: TaskRecord | None = None
    ) -> dict[str, str]:
        retries = task.retry_count or 0
        limit = self.planner.settings.max_retries
        if retries >= limit:
            raise IllegalTransition(
                f"retried {retries} time(s); the limit is {limit}", code=Code.RETRY_LIMIT_REACHED
            )
        stored = stored or self._whole(task)
        run = self.planner.stored_run(stored)
        checkpoint = stored.last_checkpoint
        ctx = stored.context() or run.context
        retried = prepare_retry(run, ctx, checkpoint, from_checkpoint, stored.wave)
        update = TaskRecord(
            ctx=retried.context.to_json(),
            checkpoint=retried.context.checkpoint,
            retry_count=retries + 1,
            last_error="",
            failure_code="",
            # failed before its first run was stored: store it now
            run="" if stored.run else run.model_dump_json(by_alias=True),
        )
        written = [F.CTX, F.CHECKPOINT, F.RETRY_COUNT, F.LAST_ERROR, F.FAILURE_CODE]
        return update.to_hash(written + ([] if stored.run else [F.RUN]))

    def _rollback_fields(
        self, task: TaskRecord, stored: TaskRecord | None = None, strict: bool = False
    ) -> tuple[dict[str, str], list[Unrestored]]:
        stored = stored or self._whole(task)
        run = prepare_rollback(
            stored, self.planner.stored_run(stored), self.planner.settings, strict=strict
        )
        update = TaskRecord(
            run=run.model_dump_json(by_alias=True),
            ctx=run.context.to_json(),
            run_id=run.run_id,
            run_kind=run.kind,
            checkpoint=run.context.checkpoint,
            total_stages=len(run.stages),
            retry_count=0,
            last_error="",
            failure_code="",
        )
        fields = update.to_hash(
            [F.RUN, F.CTX, F.RUN_ID, F.RUN_KIND, F.CHECKPOINT, F.TOTAL_STAGES, F.RETRY_COUNT,
             F.LAST_ERROR, F.FAILURE_CODE]
        )  # fmt: skip
        return fields, run.unrestored

    def written(
        self,
        decision: Decision,
        written: TaskWritten,
        task: TaskRecord,
        unrestored: list[Unrestored],
        by: str,
    ) -> Decision:
        """The decision as written: a rollback that found a newer task's deployment ended
        SUPERSEDED; one applied that cannot restore every service says which (and records
        ROLLBACK_INCOMPLETE)."""
        decision = as_written(decision, written)
        if decision.to is SUPERSEDED_STATUS or not unrestored:
            return decision
        self._record_unrestored(task, unrestored, by)
        return replace(decision, unrestored=tuple(unrestored))

    def _record_unrestored(self, task: TaskRecord, unrestored: list[Unrestored], by: str) -> None:
        """The event of a rollback that cannot restore every service (after TASK_ROLLBACK)."""
        audit.record(
            self.store.r,
            {
                "type": "ROLLBACK_INCOMPLETE",
                "planId": task.plan_id,
                "taskId": task.task_id,
                "tenantId": task.tenant_id,
                "services": ",".join(u.service for u in unrestored),
                "reason": "; ".join(f"{u.service}: {u.reason}" for u in unrestored)[:1000],
                "by": by,
            },
            self.store.settings,
        )

    def _whole(self, task: TaskRecord) -> TaskRecord:
        """The whole hash of a task a command decided on (its run, context and config)."""
        stored = self.store.get_task(task.task_id)
        if stored is None:
            raise NotFound(f"no task {task.task_id}", code=Code.TASK_NOT_FOUND)
        return stored


__all__ = [
    "SUPERSEDED",
    "TARGET_SHAPES",
    "TASK_FIELDS",
    "WAVE_SHAPES",
    "Command",
    "Controller",
    "Target",
    "TargetInvalid",
    "Write",
    "as_written",
    "decide_task",
    "unrestored_answer",
]
