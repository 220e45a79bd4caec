"""The writes of operator commands, and their typed replies.

One task's command is a compare-and-set on the status it was decided from
(lua/task_command.lua); a plan command sets the plan's control flag (lua/plan_control.lua)
and works through its tasks as a **job** (lua/plan_job.lua: start, done, drop), a slice of
tasks per script where Redis can decide them itself (lua/plan_pause_slice.lua,
lua/plan_cancel_slice.lua: the rules of deployer/lifecycle.py, checked against it by
tests/integration/test_command_parity.py). deployer/control.py and deployer/plan_commands.py
decide; this module is what they write and read, so neither names a key nor runs a script.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import redis
from redis.lock import Lock

from deployer.errors import PlanArchived, ScriptReplyError
from deployer.lifecycle import Effect
from deployer.models import PlanStatus
from deployer.settings import Settings
from deployer.state import keys, scripts
from deployer.state.record import TaskRecord
from deployer.state.store import now_ms

#: A queue operation of a task command (lua/task_command.lua): FRONT and REMOVE take the
#: task's id out of the queue first (a scan); PUSH_FRONT and PUSH_BACK do not (slices).
QueueOp = Literal["", "FRONT", "REMOVE", "PUSH_FRONT", "PUSH_BACK"]
#: Where a slice puts a task it queues (no scan of the queue: a stale entry is skipped).
SliceQueueOp = Literal["PUSH_FRONT", "PUSH_BACK"]
#: Which tasks a pause or resume slice decides: all, those a stage ever started, the others.
Which = Literal["ALL", "STARTED", "UNSTARTED"]


@dataclass(frozen=True)
class TaskCommand:
    """One task's part of an operator's command, for `Commands.task_commands`."""

    task: TaskRecord
    event: str
    new_status: str = ""
    control: str = ""
    queue_op: QueueOp = ""
    invalidate: bool = False
    by: str = ""
    reason: str = ""
    fields: dict[str, str] | None = None
    #: A run going back (rollback): SUPERSEDED instead if a newer task deployed the tenant.
    check_newer: bool = False


class TaskVerdict(StrEnum):
    """What task_command.lua did with one task's command."""

    #: Written (detail: the status before).
    OK = "OK"
    #: The status moved since the command read it (detail: the status now): decide again.
    REFUSED = "REFUSED"
    #: A rollback found the tenant deployed by a newer task (detail: its id): the task
    #: ended SUPERSEDED instead.
    SUPERSEDED = "SUPERSEDED"
    #: Retention is removing the task's plan from Redis: try again in a moment.
    ARCHIVING = "ARCHIVING"


@dataclass(frozen=True)
class TaskWritten:
    """task_command.lua's reply."""

    verdict: TaskVerdict
    detail: str

    @property
    def applied(self) -> bool:
        """The task changed (as asked, or to SUPERSEDED)."""
        return self.verdict in (TaskVerdict.OK, TaskVerdict.SUPERSEDED)

    @classmethod
    def from_reply(cls, raw: Sequence[Any]) -> TaskWritten:
        if len(raw) != 2:
            raise ScriptReplyError(f"task_command.lua answered {raw!r}: not (verdict, detail)")
        return cls(scripts.verdict(TaskVerdict, raw[0], "task_command"), str(raw[1]))


@dataclass(frozen=True)
class Refusal:
    """A task a slice left alone: its tenant, why (a deployer.errors.Code) and its status."""

    tenant_id: str
    code: str
    status: str


@dataclass(frozen=True)
class SliceDecided:
    """What one pause, resume or cancel slice decided: a count per effect, the first
    refused tasks, and (cancel) the plan's status after it."""

    counts: dict[Effect, int]
    refused: list[Refusal]
    plan_status: PlanStatus | None = None


#: The counts a slice script answers first, in order.
_PAUSE_COUNTS = (Effect.NOW, Effect.REQUEST, Effect.WITHDRAW, Effect.ALREADY, Effect.REFUSE)
_CANCEL_COUNTS = (Effect.NOW, Effect.REQUEST, Effect.ALREADY, Effect.REFUSE)


def _decided(
    raw: Sequence[Any], effects: Sequence[Effect], script: str, plan_status: PlanStatus | None
) -> SliceDecided:
    width = len(effects)
    try:
        counts = {e: int(raw[i]) for i, e in enumerate(effects)}
    except (IndexError, ValueError):
        raise ScriptReplyError(f"{script}.lua answered {list(raw)[:width]!r}: not counts") from None
    refused = list(scripts.records(Refusal, raw[width:], script))
    return SliceDecided(counts, refused, plan_status)


class JobEnd(StrEnum):
    """What plan_job.lua's DONE did."""

    #: The job ended: PLAN_<COMMAND> recorded (detail: the plan's status).
    DONE = "DONE"
    #: A newer command replaced the job meanwhile: nothing done.
    STALE = "STALE"


class JobDrop(StrEnum):
    """What plan_job.lua's DROP did."""

    DROPPED = "DROPPED"
    #: Another job started meanwhile: it stays.
    KEPT = "KEPT"


class ControlVerdict(StrEnum):
    """What plan_control.lua did."""

    OK = "OK"
    MISSING = "MISSING"
    #: Retention marked the plan (archive_mark.lua): it takes no plan command.
    ARCHIVED = "ARCHIVED"


class Commands:
    """The state an operator's commands write and read, on deployer's Redis."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.r = client
        self.settings = settings
        self._command = scripts.load(client, "task_command")
        self._control = scripts.load(client, "plan_control")
        self._job = scripts.load(client, "plan_job")
        self._pause = scripts.load(client, "plan_pause_slice")
        self._cancel = scripts.load(client, "plan_cancel_slice")

    # ---- one task ------------------------------------------------------------------------

    def task_commands(self, commands: Sequence[TaskCommand]) -> list[TaskWritten]:
        """Apply each command to its task if the task's status is still the one it was
        decided from (each its own compare-and-set; `fields`, TaskRecord.to_hash, written
        with it), all in one pipelined round trip."""
        if not commands:
            return []
        pipe = self.r.pipeline(transaction=False)
        now = now_ms()
        for c in commands:
            pairs: list[str | int] = []
            for k, v in (c.fields or {}).items():
                pairs += [k, v]
            task = c.task
            self._command(
                keys=[
                    keys.task(task.task_id),
                    keys.plan(task.plan_id),
                    keys.plan_queue(task.plan_id),
                    keys.lease(task.tenant_id),
                    keys.INFLIGHT,
                    keys.EVENTS,
                    keys.applied(task.tenant_id),
                ],
                args=[
                    task.status.value if task.status else "",
                    c.new_status,
                    c.control,
                    c.queue_op,
                    "1" if c.invalidate else "0",
                    now,
                    c.by,
                    c.reason,
                    c.event,
                    self.settings.events_maxlen,
                    "1" if c.check_newer else "0",
                    len(pairs) // 2,
                    *pairs,
                ],
                client=pipe,
            )
        return [TaskWritten.from_reply(raw) for raw in pipe.execute()]

    # ---- a plan ------------------------------------------------------------------------

    def plan_control(self, plan_id: str, control: str, by: str, reason: str, event: str) -> bool:
        """Set (PAUSE, CANCEL) or clear ('') the plan's control flag, recording `event`
        ('' for none); False when there is no such plan. PlanArchived when retention marked
        the plan (lua/archive_mark.lua) since the command read it."""
        raw = self._control(
            keys=[keys.plan(plan_id), keys.EVENTS],
            args=[control, by, reason, now_ms(), event, self.settings.events_maxlen],
        )
        verdict = scripts.verdict(ControlVerdict, raw[0] if raw else None, "plan_control")
        if verdict is ControlVerdict.ARCHIVED:
            raise PlanArchived(plan_id)
        return verdict is ControlVerdict.OK

    def plan_flag(self, plan_id: str) -> str | None:
        """The plan's control flag (PAUSE, CANCEL), None when it has none."""
        value = self.r.hget(keys.plan(plan_id), "control")
        return None if value is None else str(value)

    def tenant_count(self, plan_id: str) -> int:
        """How many tasks the plan has (its tenants list)."""
        return int(self.r.llen(keys.plan_tenants(plan_id)))

    # ---- a plan command's job ----------------------------------------------------------

    def job_start(
        self,
        plan_id: str,
        command: str,
        by: str,
        reason: str,
        force: bool,
        from_checkpoint: bool,
        total: int,
        strict: bool = False,
    ) -> int:
        """Start a plan command's job (replacing any earlier one); its generation.
        PlanArchived when retention marked the plan since the command read it."""
        raw = self._job(
            keys=self._job_keys(plan_id),
            args=["START", plan_id, now_ms(), self.settings.events_maxlen, command, by, reason,
                  "1" if force else "0", "1" if from_checkpoint else "0", total,
                  "1" if strict else "0"],
        )  # fmt: skip
        first = str(raw[0]) if raw else ""
        if first == ControlVerdict.ARCHIVED:
            raise PlanArchived(plan_id)
        if not first.isdigit():
            raise ScriptReplyError(f"plan_job.lua START answered {raw!r}: not a generation")
        return int(first)

    def job_done(
        self,
        plan_id: str,
        gen: int,
        acted: int,
        already: int,
        skipped: int,
        superseded: int,
        unlink_queue: bool,
    ) -> PlanStatus | None:
        """End the job `gen` (PLAN_<COMMAND> recorded, with these counts); the plan's status
        after it, or None when a newer command took over meanwhile (or the plan is gone)."""
        raw = self._job(
            keys=self._job_keys(plan_id),
            args=["DONE", plan_id, now_ms(), self.settings.events_maxlen, gen, acted, already,
                  skipped, superseded, "1" if unlink_queue else "0"],
        )  # fmt: skip
        end = scripts.verdict(JobEnd, raw[0] if raw else None, "plan_job")
        if end is JobEnd.STALE or not raw[1]:
            return None
        return scripts.verdict(PlanStatus, raw[1], "plan_job")

    def job_drop(self, plan_id: str, gen: str) -> JobDrop:
        """Forget a job whose record is gone or unreadable (`gen` as read, '' for none),
        unless another one started meanwhile: its plan is no longer held."""
        args: list[str | int] = ["DROP", plan_id, now_ms(), self.settings.events_maxlen, gen]
        raw = self._job(keys=self._job_keys(plan_id), args=args)
        return scripts.verdict(JobDrop, raw[0] if raw else None, "plan_job")

    def _job_keys(self, plan_id: str) -> list[str]:
        return [keys.plan(plan_id), keys.plan_job(plan_id), keys.plan_job_order(plan_id),
                keys.PLAN_JOBS, keys.EVENTS, keys.plan_queue(plan_id)]  # fmt: skip

    def job_hash(self, plan_id: str) -> dict[str, str]:
        """The job's record as stored (deployer.plan_commands.Job reads it); {} for none."""
        return self.r.hgetall(keys.plan_job(plan_id))  # type: ignore[return-value]

    def save_job(self, plan_id: str, fields: Mapping[str, str | int]) -> None:
        """Write the fields of the job's record that a slice moved on."""
        self.r.hset(keys.plan_job(plan_id), items=[x for kv in fields.items() for x in kv])

    def unfinished_jobs(self, limit: int) -> list[str]:
        """Plans whose command is not done yet, oldest first (a worker's plan-timer loop)."""
        return [str(p) for p in self.r.zrange(keys.PLAN_JOBS, 0, limit - 1)]

    def job_lock(self, plan_id: str, seconds: float) -> Lock:
        """The lock of whoever works on the plan's job now (one slice at a time), expiring
        after `seconds` if its holder dies."""
        lock: Lock = self.r.lock(keys.plan_job_lock(plan_id), timeout=seconds, sleep=0.01)
        return lock

    def order_add(self, plan_id: str, started_at: dict[str, int]) -> None:
        """A rollback's ordering pass: task id -> when it started."""
        if started_at:
            self.r.zadd(keys.plan_job_order(plan_id), started_at)

    def order_newest(self, plan_id: str, start: int, count: int) -> list[str]:
        """A rollback's next `count` task ids from `start`, newest started first."""
        ids = self.r.zrevrange(keys.plan_job_order(plan_id), start, start + count - 1)
        return [str(i) for i in ids]

    # ---- slices decided in Redis ---------------------------------------------------------

    def pause_slice(
        self,
        plan_id: str,
        resume: bool,
        start: int,
        stop: int,
        *,
        backward: bool,
        queue_op: SliceQueueOp,
        which: Which,
        by: str,
        reason: str,
        force: bool,
    ) -> SliceDecided:
        """Pause (or `resume`) the plan's tasks at positions start..stop in one script, each
        as lifecycle.decide decides it (`backward`: last first; a resumed task goes to the
        queue by `queue_op`; `which` picks the tasks this pass decides)."""
        raw = self._pause(
            keys=self._slice_keys(plan_id),
            args=["RESUME" if resume else "PAUSE", start, stop, "1" if backward else "0",
                  now_ms(), by, reason, self.settings.events_maxlen, keys.task(""), queue_op,
                  which, keys.lease(""), "1" if force else "0"],
        )  # fmt: skip
        return _decided(raw, _PAUSE_COUNTS, "plan_pause_slice", None)

    def cancel_slice(
        self, plan_id: str, start: int, stop: int, *, last: bool, by: str, reason: str, listed: int
    ) -> SliceDecided:
        """Cancel the plan's tasks at positions start..stop in one script, each as
        lifecycle.decide decides it (`last`: the queue goes too); at most `listed` refused
        tasks are named."""
        raw = self._cancel(
            keys=self._slice_keys(plan_id),
            args=[start, stop, now_ms(), by, reason, self.settings.events_maxlen, keys.task(""),
                  keys.lease(""), "1" if last else "0", listed],
        )  # fmt: skip
        status = scripts.verdict(PlanStatus, raw[0] if raw else None, "plan_cancel_slice")
        return _decided(raw[1:], _CANCEL_COUNTS, "plan_cancel_slice", status)

    @staticmethod
    def _slice_keys(plan_id: str) -> list[str]:
        return [keys.plan(plan_id), keys.plan_tenants(plan_id), keys.plan_queue(plan_id),
                keys.INFLIGHT, keys.EVENTS]  # fmt: skip


__all__ = [
    "Commands",
    "ControlVerdict",
    "QueueOp",
    "JobDrop",
    "JobEnd",
    "Refusal",
    "SliceDecided",
    "SliceQueueOp",
    "TaskCommand",
    "TaskVerdict",
    "TaskWritten",
    "Which",
]
