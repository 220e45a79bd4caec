"""Operator commands (pause, resume, cancel, retry, rollback) for a tenant or a whole plan.

Each task's command is decided by `lifecycle.decide` and applied by one compare-and-set
script; if a stage changed the status in between, the command is decided again. Runs
that a command makes ready (resume, retry, rollback) go to the front of their plan's
queue and start through the same slot-filling path as a new plan.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import redis

from deployer import audit, keys, scripts
from deployer.context import Unrestored
from deployer.errors import (
    Code,
    DeployerError,
    IllegalTransition,
    NotFound,
    PlanHasNoStrategy,
    PlanNotAwaitingApproval,
    TargetInvalid,
)
from deployer.lifecycle import Command, Decision, Effect, decide
from deployer.models import TaskStatus, is_id, task_id_for
from deployer.planner import Planner, prepare_retry, prepare_rollback
from deployer.record import Field as F
from deployer.record import TaskRecord
from deployer.store import Store, now_ms

log = logging.getLogger("deployer.control")

#: What a command reads of each task it decides on.
TASK_FIELDS = (F.TASK_ID, F.PLAN_ID, F.TENANT_ID, F.STATUS, F.CONTROL, F.RETRY_COUNT,
               F.CHECKPOINT, F.STARTED_AT)  # fmt: skip
MAX_CAS_ATTEMPTS = 5


@dataclass(frozen=True)
class Target:
    """What a command acts on: every task of a plan, a tenant's latest task, or with both
    ids exactly that one (plan, tenant) task (e.g. an older plan's paused task of a tenant
    that a newer plan has deployed since)."""

    plan_id: str | None = None
    tenant_id: str | None = None

    @classmethod
    def parse(cls, raw: Any) -> Target:
        """`{"planId": P}`, `{"tenantId": T}` or both (a JSON string is accepted too)."""
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                raise TargetInvalid(TARGET_SHAPES) from None
        if not isinstance(raw, dict) or not raw or set(raw) - {"planId", "tenantId"}:
            raise TargetInvalid(TARGET_SHAPES)
        ids: dict[str, str] = {}
        for name, value in raw.items():
            if isinstance(value, int) and not isinstance(value, bool) and name == "planId":
                value = str(value)
            if not is_id(value):
                raise TargetInvalid(f"{name}: not a valid id")
            ids[name] = value
        return cls(plan_id=ids.get("planId"), tenant_id=ids.get("tenantId"))

    @property
    def is_plan(self) -> bool:
        """Every task of a plan (not one task of it)."""
        return bool(self.plan_id) and not self.tenant_id

    def describe(self) -> str:
        if self.plan_id and self.tenant_id:
            return f"tenant {self.tenant_id} of plan {self.plan_id}"
        return f"plan {self.plan_id}" if self.plan_id else f"tenant {self.tenant_id}"


TARGET_SHAPES = 'target must be {"planId": P}, {"tenantId": T} or both (that one task)'
#: Tasks per round trip of a whole-plan cancel (plan_cancel_slice.lua): each slice holds
#: Redis ~60 ms on a busy 2-core machine (1,000: ~110 ms), so workers' stage scripts wait
#: at most that long behind it; a 100,000-task plan is 200 round trips (~10 s).
CANCEL_SLICE = 500


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
    """The order to resume a plan's tasks in, so that its queue ends up holding the tenants
    paused mid-flight (a stage started: they hold half-applied work) before those never
    started, each group in submission order. Every resumed task is pushed to the queue's
    front, so the wanted queue order is applied back to front."""
    mid_flight = [t for t in tasks if t.started]
    never = [t for t in tasks if not t.started]
    return list(reversed(mid_flight + never))


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
        force: bool = False,
        strict: bool = False,
    ) -> dict[str, Any]:
        """`force` (resume, retry): the runs may apply their config even where a newer task
        deployed the tenant since (else they end SUPERSEDED); recorded in the events.
        `strict` (rollback): refuse a task's rollback that cannot restore every service the
        forward run changed (ROLLBACK_INCOMPLETE) instead of naming them in the answer."""
        target = Target.parse(raw_target)
        by, reason = (by or "")[:200], (reason or "")[:1000]
        try:
            if command is Command.APPROVE:
                answer = self._approve(target, by, reason)
            elif target.is_plan and command is Command.CANCEL:
                answer = self._cancel_plan(target, by, reason)
            else:
                answer = self._execute(
                    command, target, by, reason, from_checkpoint, force, strict=strict
                )
        except DeployerError as exc:
            answer = exc.as_result()
        if not answer["ok"]:
            self._record_refusal(command, target, by, reason, answer)
        elif (
            target.is_plan
            and target.plan_id
            and command
            not in (
                Command.ROLLBACK,
                Command.APPROVE,
            )
        ):
            # a plan with waves: resume continues the current wave (and a bake that ended
            # meanwhile), cancel ends the waves; the wave step sees the plan's control flag
            # (a plan rollback ended them already; the budget's rollback runs inside a step)
            self.planner.advance(target.plan_id)
        return answer

    def _execute(
        self,
        command: Command,
        target: Target,
        by: str,
        reason: str,
        from_checkpoint: bool,
        force: bool = False,
        *,
        strict: bool = False,
    ) -> dict[str, Any]:
        tasks = self._resolve(target)
        if not target.is_plan and command in STARTS_A_RUN:
            self._refuse_if_plan_halted(command, tasks[0], force)
        if target.is_plan:
            assert target.plan_id is not None
            if not any(self._preview(command, t, force).effect is not Effect.REFUSE for t in tasks):
                # every task refuses: a refusal, so no plan flag and no PLAN_ event
                everyone = [self._refusal(command, t, force) for t in tasks]
                return self._answer(
                    command, target, Counter({Effect.REFUSE.value: len(tasks)}), everyone, []
                )
            tasks = self._plan_wide(command, target.plan_id, tasks, by, reason)
        outcomes: Counter[str] = Counter()
        refused: list[dict[str, str]] = []
        notes: list[str] = []
        unrestored: list[dict[str, str]] = []
        plans: set[str] = set()
        for task in tasks:
            if command is Command.ROLLBACK and target.is_plan and not task.started_at:
                # A whole-plan rollback covers the tasks that changed something.
                refused.append(self._refusal(command, task, force))
                continue
            decision = self._apply(
                command, task, by, reason, from_checkpoint, force, strict=strict
            )
            outcomes[decision.effect.value] += 1
            unrestored += [{"tenantId": task.tenant_id, **u.wire()} for u in decision.unrestored]
            if decision.effect is Effect.REFUSE:
                refused.append(
                    {"tenantId": task.tenant_id, "code": decision.code, "message": decision.note}
                )
            elif decision.note:
                notes.append(decision.note)
            if decision.effect is Effect.NOW:
                plans.add(task.plan_id)
        for plan_id in sorted(plans):
            self.planner.dispatch(plan_id)
        answer = self._answer(command, target, outcomes, refused, notes)
        if unrestored and answer["ok"]:
            answer.update(unrestored_answer(target, unrestored, answer["message"]))
        if target.is_plan and answer["ok"]:
            self._record_plan_command(command, target, by, reason, answer, len(refused))
        return answer

    def _plan_wide(
        self, command: Command, plan_id: str, tasks: list[TaskRecord], by: str, reason: str
    ) -> list[TaskRecord]:
        """The plan's own part of a plan command, before its tasks': a rollback of a plan
        with waves ends them first (`_end_waves`), then the plan flag; the tasks in the
        order the command takes them."""
        if command is Command.ROLLBACK and self.store.get_plan_field(plan_id, "strategy"):
            tasks = self._end_waves(plan_id, tasks, by, reason)
        self.store.plan_control(plan_id, PLAN_FLAG.get(command, ""), by, reason, "")
        return resume_order(tasks) if command is Command.RESUME else tasks

    def _refuse_if_plan_halted(self, command: Command, task: TaskRecord, force: bool) -> None:
        """A tenant's run queued under a plan-wide PAUSE or CANCEL flag would wait forever
        (no slot is filled and a stage start obeys the flag): refuse it, naming the way on."""
        if _decide(command, task, force).effect is not Effect.NOW:
            return
        plan_id = task.plan_id
        flag = self.store.r.hget(keys.plan(plan_id), "control")
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

    def _preview(self, command: Command, task: TaskRecord, force: bool = False) -> Decision:
        """What the command would do to `task` as last read (nothing is written)."""
        if command is Command.ROLLBACK and not task.started_at:
            return Decision(
                Effect.REFUSE, code=Code.TASK_NEVER_STARTED, note="nothing to roll back"
            )
        return _decide(command, task, force)

    def _refusal(self, command: Command, task: TaskRecord, force: bool = False) -> dict[str, str]:
        decision = self._preview(command, task, force)
        return {"tenantId": task.tenant_id, "code": decision.code, "message": decision.note}

    def _cancel_plan(self, target: Target, by: str, reason: str) -> dict[str, Any]:
        """Cancel every task of a plan in slices of CANCEL_SLICE tasks per round trip.

        The plan's CANCEL flag goes first (no slot is filled again, a running stage cancels
        itself at its next start or poll); then each slice decides its tasks in one script.
        A plan with no task left to cancel is refused without setting the flag.
        """
        plan_id = target.plan_id
        assert plan_id is not None
        plan = self.store.get_plan(plan_id)
        if not plan:
            raise NotFound(f"no plan {plan_id}", code=Code.PLAN_NOT_FOUND)
        cancellable = ("PENDING", "RUNNING", "ROLLING_BACK", "PAUSED", "FAILED",
                       "ROLLBACK_FAILED", "CANCELLED")  # fmt: skip
        if not any(int(plan.get(f"c:{s}") or 0) for s in cancellable):
            first = self.store.get_tasks(
                self.store.plan_task_ids(plan_id, 0, 49), (F.TENANT_ID, F.STATUS)
            )
            finished = [
                {
                    "tenantId": t.tenant_id,
                    "code": Code.TASK_ALREADY_FINISHED,
                    "message": f"task is {t.status.value if t.status else None}",
                }
                for t in first
            ]
            everyone = Counter({Effect.REFUSE.value: int(plan.get("total") or 0)})
            return self._answer(Command.CANCEL, target, everyone, finished, [])
        self.store.plan_control(plan_id, "CANCEL", by, reason, "")
        total = int(self.store.r.llen(keys.plan_tenants(plan_id)))
        script = scripts.load(self.store.r, "plan_cancel_slice")
        outcomes = Counter[str]()
        refused: list[dict[str, str]] = []
        for start in range(0, max(total, 1), CANCEL_SLICE):
            raw = script(
                keys=[keys.plan(plan_id), keys.plan_tenants(plan_id), keys.plan_queue(plan_id),
                      keys.INFLIGHT, keys.EVENTS],
                args=[start, start + CANCEL_SLICE - 1, now_ms(), by, reason,
                      self.store.settings.events_maxlen, keys.task(""), keys.lease(""),
                      "1" if start + CANCEL_SLICE >= total else "0", 50],
            )  # fmt: skip
            for effect, n in zip((Effect.NOW, Effect.REQUEST, Effect.ALREADY, Effect.REFUSE),
                                 raw[1:5], strict=True):  # fmt: skip
                outcomes[effect.value] += int(n)
            for tenant_id, status in zip(raw[5::2], raw[6::2], strict=True):
                if len(refused) < 50:
                    refused.append({"tenantId": tenant_id, "code": Code.TASK_ALREADY_FINISHED,
                                    "message": f"task is {status}"})  # fmt: skip
        answer = self._answer(Command.CANCEL, target, outcomes, refused, [])
        skipped = outcomes[Effect.REFUSE.value]
        self._record_plan_command(Command.CANCEL, target, by, reason, answer, skipped)
        return answer

    def _record_plan_command(
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
            audit.record(self.store.r, fields, self.store.settings)
        except redis.RedisError:  # the refusal is still answered; the audit line is lost
            log.warning("could not record refused %s of %s", command.value, target.describe())

    def _latest_plan(self, tenant_id: str | None) -> str | None:
        """The plan of the tenant's latest task: a refusal is filed in the tenant's history
        through it (tenant references point into plan streams)."""
        task_id = self.store.task_id_for_tenant(tenant_id) if tenant_id else None
        plan_id = self.store.get_tasks([task_id], (F.PLAN_ID,))[0].plan_id if task_id else None
        return plan_id or None

    def _approve(self, target: Target, by: str, reason: str) -> dict[str, Any]:
        """Start the plan's wave that waits for approval (a stored decision: it holds even
        if every worker is down; they send the wave's chains when they are back)."""
        if not target.is_plan or not target.plan_id:
            raise TargetInvalid('approve takes a plan: {"planId": ...}')
        if not self.store.plan_exists(target.plan_id):
            raise NotFound(f"no plan {target.plan_id}", code=Code.PLAN_NOT_FOUND)
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
            "code": Code.OK,
            "message": f"approve plan {target.plan_id}: wave {outcome.wave} approved "
            f"({outcome.outcome.lower()})",
            "wave": outcome.wave,
            "waveState": outcome.outcome,
        }

    def _end_waves(
        self,
        plan_id: str,
        tasks: list[TaskRecord],
        by: str,
        reason: str,
    ) -> list[TaskRecord]:
        """A rollback of a plan with waves ends them: no later wave starts, tenants that never
        started are cancelled (their old config is still live), and the started ones roll
        back newest first (each goes to the front of the queue, the newest last)."""
        self.store.wave_step(plan_id, "HALT", by, reason or "plan rolled back")
        started: list[TaskRecord] = []
        for task in tasks:
            if task.started_at:
                started.append(task)
            elif task.status in (TaskStatus.PENDING, TaskStatus.PAUSED):
                self._apply(
                    Command.CANCEL, task, by, "plan rolled back before this tenant started", False
                )
        return sorted(started, key=lambda t: t.started_at or 0)

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
        if not target.is_plan:
            if refused:
                return {"ok": False, **refused[0], "counts": counts}
            code: str = Code.OK if acted else Code.ALREADY
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
            "code": Code.OK if acted else Code.ALREADY,
            "message": f"{command.value} {target.describe()}: {acted} task(s) acted on, "
            f"{outcomes[Effect.ALREADY]} already so, {len(refused)} skipped",
            "counts": counts,
            "skipped": refused[:50],
        }

    def _resolve(self, target: Target) -> list[TaskRecord]:
        """The tasks a command decides on (TASK_FIELDS), each with a readable status."""
        if target.plan_id and target.tenant_id:
            ids = [task_id_for(target.plan_id, target.tenant_id)]
            found = [t for t in self.store.get_tasks(ids, TASK_FIELDS) if t.status]
            if not found:
                raise NotFound(f"no task for {target.describe()}", code=Code.TASK_NOT_FOUND)
            return found
        if target.tenant_id:
            task_id = self.store.task_id_for_tenant(target.tenant_id)
            if not task_id:
                raise NotFound(f"no task for tenant {target.tenant_id}", code=Code.TASK_NOT_FOUND)
            ids = [task_id]
        else:
            assert target.plan_id is not None
            if not self.store.plan_exists(target.plan_id):
                raise NotFound(f"no plan {target.plan_id}", code=Code.PLAN_NOT_FOUND)
            ids = self.store.plan_task_ids(target.plan_id)
        return [t for t in self.store.get_tasks(ids, TASK_FIELDS) if t.status]

    def _apply(
        self,
        command: Command,
        task: TaskRecord,
        by: str,
        reason: str,
        from_checkpoint: bool,
        force: bool = False,
        *,
        strict: bool = False,
    ) -> Decision:
        for _ in range(MAX_CAS_ATTEMPTS):
            decision = _decide(command, task, force)
            if decision.effect in (Effect.ALREADY, Effect.REFUSE):
                return decision
            try:
                applied, _current, unrestored = self._write(
                    command, decision, task, by, reason, from_checkpoint, force, strict=strict
                )
            except DeployerError as exc:
                return Decision(Effect.REFUSE, code=exc.code, note=exc.message)
            if applied:
                return replace(decision, unrestored=tuple(unrestored))
            task = self.store.get_tasks([task.task_id], TASK_FIELDS)[0]
        return Decision(Effect.REFUSE, code=Code.TASK_BUSY, note="status kept changing; try again")

    def _write(
        self,
        command: Command,
        decision: Decision,
        task: TaskRecord,
        by: str,
        reason: str,
        from_checkpoint: bool,
        force: bool = False,
        *,
        strict: bool = False,
    ) -> tuple[bool, str, list[Unrestored]]:
        """Write the decided change; (applied, the status found, a rollback's services it
        cannot restore)."""
        event = EVENT[(command, decision.effect)]
        common: dict[str, Any] = {"by": by, "reason": reason, "event": event}
        # resume and retry say, on the task, whether the run may apply its config over a
        # newer task's (stage_begin.lua reads it when the run takes the tenant).
        forced: dict[str, str] = {}
        if command in (Command.RESUME, Command.RETRY):
            forced = TaskRecord(force="1" if force else "0").to_hash([F.FORCE])
            if force:
                common["reason"] = f"forced{': ' + reason if reason else ''}"
        if decision.effect is Effect.REQUEST:
            return (*self.store.task_command(task, control=PLAN_FLAG[command], **common), [])
        if decision.effect is Effect.WITHDRAW:
            written = self.store.task_command(task, control="CLEAR", fields=forced, **common)
            return (*written, [])
        status = decision.to.value if decision.to else ""
        queue_op, invalidate, control = IMMEDIATE[command]
        fields: dict[str, str] | None = forced or None
        if command is Command.RETRY:
            fields = {**self._retry_fields(task, from_checkpoint), **forced}
            plain = f"fromCheckpoint={str(from_checkpoint).lower()}"
            common["reason"] = reason or plain
            if force:
                common["reason"] = f"forced: {reason or plain}"
        unrestored: list[Unrestored] = []
        if command is Command.ROLLBACK:
            fields, unrestored = self._rollback_fields(task, strict)
        applied, current = self.store.task_command(
            task,
            new_status=status,
            queue_op=queue_op,
            invalidate=invalidate,
            control=control,
            fields=fields,
            **common,
        )
        if applied and unrestored:
            self._record_unrestored(task, unrestored, by)
        return applied, current, unrestored if applied else []

    def _retry_fields(self, task: TaskRecord, from_checkpoint: bool) -> dict[str, str]:
        retries = task.retry_count or 0
        limit = self.planner.settings.max_retries
        if retries >= limit:
            raise IllegalTransition(
                f"retried {retries} time(s); the limit is {limit}", code=Code.RETRY_LIMIT_REACHED
            )
        stored = self._whole(task)
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
        self, task: TaskRecord, strict: bool = False
    ) -> tuple[dict[str, str], list[Unrestored]]:
        stored = self._whole(task)
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


def unrestored_answer(
    target: Target, unrestored: list[dict[str, str]], message: str
) -> dict[str, Any]:
    """What a rollback's answer adds when some services cannot be restored: each (tenant,
    service, reason), and the message says so."""
    if target.is_plan:
        tenants = len({u["tenantId"] for u in unrestored})
        said = f"{tenants} tenant(s) cannot restore every service (see unrestored)"
    else:
        said = "cannot restore " + "; ".join(f"{u['service']} ({u['reason']})" for u in unrestored)
    return {"message": f"{message}; {said}", "unrestored": unrestored[:100]}


def _decide(command: Command, task: TaskRecord, force: bool) -> Decision:
    """`lifecycle.decide` on a task as read; one whose status is gone or unreadable (deleted
    or corrupted since `_resolve` kept it) is refused rather than guessed at."""
    if task.status is None:
        return Decision(Effect.REFUSE, code=Code.TASK_NOT_FOUND, note="the task has no status")
    return decide(command, task.status, task.control or None, force)


__all__ = ["Command", "Controller", "Target", "TargetInvalid"]
