"""What a command is aimed at and how one task's command is decided and written.

Shared by the task commands (deployer/control.py) and the plan-wide ones
(deployer/plan_commands.py); it lives apart from both so that neither imports the other
for it (the controller builds its plan commands; they call it back through the instance).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from deployer.context import Unrestored
from deployer.errors import Code, TargetInvalid
from deployer.lifecycle import Command, Decision, Effect, decide
from deployer.models import TaskStatus, is_id
from deployer.state.commands import TaskCommand, TaskVerdict, TaskWritten
from deployer.state.record import Field as F
from deployer.state.record import TaskRecord
from deployer.strategy import MAX_WAVES

#: What a command reads of each task it decides on.
TASK_FIELDS = (F.TASK_ID, F.PLAN_ID, F.TENANT_ID, F.STATUS, F.CONTROL, F.RETRY_COUNT,
               F.CHECKPOINT, F.STARTED_AT)  # fmt: skip


@dataclass(frozen=True)
class Target:
    """What a command acts on: every task of a plan, a tenant's latest task, or with both
    ids exactly that one (plan, tenant) task (e.g. an older plan's paused task of a tenant
    that a newer plan has deployed since). approve and promote name a plan's `wave`."""

    plan_id: str | None = None
    tenant_id: str | None = None
    wave: int | None = None

    @classmethod
    def parse(cls, raw: Any, waves: bool = False) -> Target:
        """`{"planId": P}`, `{"tenantId": T}` or both (a JSON string is accepted too);
        with `waves` (approve, promote) `{"planId": P, "wave": N}`."""
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                raise TargetInvalid(TARGET_SHAPES) from None
        allowed = {"planId", "tenantId"} | ({"wave"} if waves else set())
        if not isinstance(raw, dict) or not raw or set(raw) - allowed:
            raise TargetInvalid(WAVE_SHAPES if waves else TARGET_SHAPES)
        ids: dict[str, str] = {}
        wave: int | None = None
        for name, value in raw.items():
            if name == "wave":
                wave = _wave_number(value)
                continue
            if isinstance(value, int) and not isinstance(value, bool) and name == "planId":
                value = str(value)
            if not is_id(value):
                raise TargetInvalid(f"{name}: not a valid id")
            ids[name] = value
        return cls(plan_id=ids.get("planId"), tenant_id=ids.get("tenantId"), wave=wave)

    @property
    def is_plan(self) -> bool:
        """Every task of a plan (not one task of it)."""
        return bool(self.plan_id) and not self.tenant_id

    def describe(self) -> str:
        if self.plan_id and self.tenant_id:
            return f"tenant {self.tenant_id} of plan {self.plan_id}"
        return f"plan {self.plan_id}" if self.plan_id else f"tenant {self.tenant_id}"


def _wave_number(value: Any) -> int:
    """A wave index as a client sends it: a JSON integer (a string of digits is accepted)."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WAVES:
        raise TargetInvalid(f"wave: a wave index (0 to {MAX_WAVES}), not {value!r}")
    return value


TARGET_SHAPES = 'target must be {"planId": P}, {"tenantId": T} or both (that one task)'
WAVE_SHAPES = 'target must be {"planId": P, "wave": N}'


#: A rollback's outcome count for tasks whose tenant a newer task deployed since.
SUPERSEDED = "SUPERSEDED"


#: Marks a decision whose write found the tenant deployed by a newer task (SUPERSEDED).
SUPERSEDED_STATUS = TaskStatus.SUPERSEDED


@dataclass(frozen=True)
class Write:
    """One task's write of a decided command, and the services a rollback it prepares
    cannot restore (named in the answer and a ROLLBACK_INCOMPLETE event once written)."""

    command: TaskCommand
    unrestored: list[Unrestored] = field(default_factory=list)


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


def as_written(decision: Decision, written: TaskWritten) -> Decision:
    """The decision as written: a rollback that found a newer task's deployment ended
    SUPERSEDED instead."""
    if written.verdict is TaskVerdict.SUPERSEDED:
        newer = written.detail
        return Decision(
            Effect.NOW,
            SUPERSEDED_STATUS,
            note=f"tenant deployed by newer task {newer} since: left alone (superseded)",
        )
    return decision


def decide_task(command: Command, task: TaskRecord, force: bool) -> Decision:
    """`lifecycle.decide` on a task as read; one whose status is gone or unreadable (deleted
    or corrupted since it was read) is refused rather than guessed at. A superseded task
    that never started has nothing to roll back, forced or not."""
    if task.status is None:
        return Decision(Effect.REFUSE, code=Code.TASK_NOT_FOUND, note="the task has no status")
    if command is Command.ROLLBACK and task.status is TaskStatus.SUPERSEDED and not task.started:
        return Decision(Effect.REFUSE, code=Code.TASK_SUPERSEDED,
                        note="the tenant was deployed by a newer task before this one started: "
                        "nothing to roll back")  # fmt: skip
    return decide(command, task.status, task.control or None, force)
