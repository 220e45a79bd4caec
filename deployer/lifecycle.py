"""The state machines: every legal task transition and what each command does in each state.

Pure functions and tables; the store applies a decision atomically (compare-and-set on the
status it was decided from), so a racing stage or command can never be overwritten.

Task transitions (who causes them):

    PENDING      -> RUNNING | ROLLING_BACK      a stage starts (run kind decides)
    PENDING      -> PAUSED | CANCELLED          pause / cancel, at once
    RUNNING      -> COMPLETED | FAILED          last stage ends / a step fails
    ROLLING_BACK -> ROLLED_BACK | ROLLBACK_FAILED
    RUNNING, ROLLING_BACK -> PAUSED | CANCELLED at the next stage start or poll (cooperative)
    PAUSED       -> PENDING                     resume (queued first; continues mid-stage)
    PAUSED       -> CANCELLED                   cancel
    FAILED, ROLLBACK_FAILED -> PENDING          retry (the last run again)
    FAILED, ROLLBACK_FAILED -> CANCELLED        cancel (give up)
    FAILED, PAUSED, CANCELLED, COMPLETED -> PENDING   rollback (a new run, old config)
    PENDING, RUNNING -> SUPERSEDED              a run (forward, retry or rollback) takes the
                                                tenant after a newer task deployed it (unless
                                                forced); a rollback command finds it so at once
    COMPLETED, FAILED, PAUSED, CANCELLED -> SUPERSEDED   ditto (rollback, decided at once)
    SUPERSEDED   -> PENDING                     retry --force (re-apply the older config),
                                                rollback --force of one that had started

A plan's status is derived from its tasks' counters, the way an operator reads it, in the
same script that changes a task (deployer/state/lua/_prelude.lua, derive_plan; `derive_plan_status`
below is its pure mirror, and tests check both against one table). First rule that holds:

    | # | the tasks' counters                                          | plan status |
    |---|--------------------------------------------------------------|-------------|
    | 1 | any RUNNING or ROLLING_BACK                                  | RUNNING     |
    | 2 | any PENDING (plan paused: PAUSED)                            | RUNNING     |
    | 3 | any PAUSED (nothing left to run)                             | PAUSED      |
    | 4 | any FAILED or ROLLBACK_FAILED                                | FAILED      |
    | 5 | the plan was cancelled, or every task is CANCELLED           | CANCELLED   |
    | 6 | some ROLLED_BACK and none COMPLETED (cancelled and superseded | ROLLED_BACK |
    |   | tasks aside)                                                 |             |
    | 7 | otherwise (COMPLETED, plus any CANCELLED/SUPERSEDED)         | COMPLETED   |

So 5 completed + 1 cancelled is COMPLETED (the counts say the rest), not CANCELLED: one
tenant cancelled on its own does not make the rollout a cancelled one. SUPERSEDED (a newer
run deployed the tenant since) is finished and not a failure.

Then two holds: a plan with a strategy reads RUNNING (PAUSED when paused) instead of a
finished status until its waves are DONE or HALTED (its last bake included), and so does a
plan whose command still works through its tasks in slices (plan field `job`); a plan whose
failure budget decided a rollback (`pendingRollback`) reads RUNNING, not PAUSED.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from deployer.context import Unrestored
from deployer.errors import Code
from deployer.models import PlanStatus
from deployer.models import TaskStatus as S


class Command(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    RETRY = "retry"
    ROLLBACK = "rollback"
    #: The plan's waves, never a task (deployer/rollout.py, before any task is decided):
    #: start the wave that waits for approval; skip bakes; change the failure budget.
    APPROVE = "approve"
    PROMOTE = "promote"
    BUDGET = "budget"


#: Commands that act on a plan's waves (a strategy), not on its tasks.
WAVE_COMMANDS = frozenset({Command.APPROVE, Command.PROMOTE, Command.BUDGET})


class Effect(StrEnum):
    NOW = "NOW"  # the status changes at once
    REQUEST = "REQUEST"  # a flag the running chain honours at its next stage start or poll
    WITHDRAW = "WITHDRAW"  # clear a pending request (resume before a pause took effect)
    ALREADY = "ALREADY"  # already in effect: harmless, answered ok with a note
    REFUSE = "REFUSE"


@dataclass(frozen=True)
class Decision:
    effect: Effect
    to: S | None = None
    code: str = ""
    note: str = ""
    #: A rollback applied: the services it cannot restore (deployer.planner.unrestorable).
    unrestored: tuple[Unrestored, ...] = ()


TERMINAL = frozenset({S.COMPLETED, S.CANCELLED, S.ROLLED_BACK, S.SUPERSEDED})
ACTIVE = frozenset({S.RUNNING, S.ROLLING_BACK})
RETRYABLE = frozenset({S.FAILED, S.ROLLBACK_FAILED})
ROLLBACKABLE = frozenset({S.FAILED, S.PAUSED, S.CANCELLED, S.COMPLETED})
#: Where a run stops: nothing moves the task on but a command (what `--wait` waits for).
ENDED = frozenset(
    {S.COMPLETED, S.FAILED, S.CANCELLED, S.ROLLED_BACK, S.ROLLBACK_FAILED, S.SUPERSEDED}
)
#: Where a plan stops: the same names as plan statuses (rules 4 to 7 of the table above;
#: a plan is never ROLLBACK_FAILED or SUPERSEDED, its tasks are).
PLAN_ENDED = frozenset(p for p in PlanStatus if p.value in ENDED)

#: (from, to) pairs a command may cause directly; stages cause the others.
COMMAND_TRANSITIONS = frozenset(
    {
        (S.PENDING, S.PAUSED),
        (S.PENDING, S.CANCELLED),
        (S.PAUSED, S.PENDING),
        (S.PAUSED, S.CANCELLED),
        (S.FAILED, S.PENDING),
        (S.FAILED, S.CANCELLED),
        (S.ROLLBACK_FAILED, S.PENDING),
        (S.ROLLBACK_FAILED, S.CANCELLED),
        (S.CANCELLED, S.PENDING),
        (S.COMPLETED, S.PENDING),
        (S.SUPERSEDED, S.PENDING),
    }
)

#: Why a superseded task is not retried or rolled back without more.
SUPERSEDED_NOTE = "the tenant was deployed by a newer task since"


def _pause(status: S, control: str | None) -> Decision:
    if status in ACTIVE:
        if control == "PAUSE":
            return Decision(Effect.ALREADY, note="pause already requested")
        if control == "CANCEL":
            return Decision(Effect.REFUSE, code=Code.TASK_CANCELLING, note="cancel requested")
        return Decision(Effect.REQUEST, note="pauses at its next stage start or poll")
    if status is S.PENDING:
        return Decision(Effect.NOW, S.PAUSED)
    if status is S.PAUSED:
        return Decision(Effect.ALREADY, note="already paused")
    return Decision(Effect.REFUSE, code=Code.TASK_NOT_RUNNING, note=f"task is {status}")


def _resume(status: S, control: str | None) -> Decision:
    if status is S.PAUSED:
        return Decision(Effect.NOW, S.PENDING)
    if status in ACTIVE and control == "PAUSE":
        return Decision(Effect.WITHDRAW, note="pause request withdrawn")
    if status in ACTIVE or status is S.PENDING:
        return Decision(Effect.ALREADY, note="not paused; already running")
    return Decision(Effect.REFUSE, code=Code.TASK_NOT_PAUSED, note=f"task is {status}")


def _cancel(status: S, control: str | None) -> Decision:
    if status in ACTIVE:
        if control == "CANCEL":
            return Decision(Effect.ALREADY, note="cancel already requested")
        return Decision(Effect.REQUEST, note="cancels at its next stage start or poll")
    if status in (S.PENDING, S.PAUSED) or status in RETRYABLE:
        return Decision(Effect.NOW, S.CANCELLED)
    if status is S.CANCELLED:
        return Decision(Effect.ALREADY, note="already cancelled")
    return Decision(Effect.REFUSE, code=Code.TASK_ALREADY_FINISHED, note=f"task is {status}")


def _retry(status: S, control: str | None) -> Decision:
    if status in RETRYABLE:
        return Decision(Effect.NOW, S.PENDING)
    return Decision(Effect.REFUSE, code=Code.TASK_NOT_FAILED, note=f"task is {status}")


def _rollback(status: S, control: str | None) -> Decision:
    if status in ROLLBACKABLE:
        return Decision(Effect.NOW, S.PENDING)
    if status in (S.ROLLING_BACK, S.ROLLED_BACK):
        return Decision(Effect.REFUSE, code=Code.TASK_ALREADY_ROLLED_BACK, note=f"task is {status}")
    return Decision(
        Effect.REFUSE,
        code=Code.TASK_NOT_ROLLBACKABLE,
        note=f"task is {status}; pause or cancel first",
    )


def _waves_only(status: S, control: str | None) -> Decision:
    return Decision(
        Effect.REFUSE, code=Code.APPROVE_PLAN_ONLY, note="this command acts on a plan's waves"
    )


_DECIDERS = {
    Command.PAUSE: _pause,
    Command.RESUME: _resume,
    Command.CANCEL: _cancel,
    Command.RETRY: _retry,
    Command.ROLLBACK: _rollback,
    Command.APPROVE: _waves_only,
    Command.PROMOTE: _waves_only,
    Command.BUDGET: _waves_only,
}


def derive_plan_status(
    counts: Mapping[str, int],
    control: str | None = None,
    wave_state: str | None = None,
    rolling: bool = False,
    job: bool = False,
) -> PlanStatus:
    """The plan status for its tasks' `counts` by status and the plan's `control` flag
    (PAUSE, CANCEL or none): the table in this module's docstring, as derive_plan applies it.

    Two holds come after the table: a plan with a strategy is not over before its waves are
    (`wave_state` DONE or HALTED: the last bake protects whoever waits on the plan), nor while
    a plan command still works through its tasks in slices (`job`); and a plan whose failure
    budget decided a rollback (`rolling`) is on its way back, RUNNING, not PAUSED.
    """

    def n(*statuses: S) -> int:
        return sum(int(counts.get(s.value, 0) or 0) for s in statuses)

    if rolling and control == "PAUSE":
        control = None
    status = _table_status(counts, control, n)
    if rolling:
        status = PlanStatus.RUNNING
    unfinished_waves = wave_state is not None and wave_state not in ("DONE", "HALTED")
    held = status not in (PlanStatus.RUNNING, PlanStatus.PAUSED) and control != "CANCEL"
    if held and (job or unfinished_waves):
        status = PlanStatus.PAUSED if control == "PAUSE" else PlanStatus.RUNNING
    return status


def _table_status(
    counts: Mapping[str, int], control: str | None, n: Callable[..., int]
) -> PlanStatus:
    total = n(*S)
    if n(S.RUNNING, S.ROLLING_BACK):
        return PlanStatus.RUNNING
    if n(S.PENDING):
        return PlanStatus.PAUSED if control == "PAUSE" else PlanStatus.RUNNING
    if n(S.PAUSED):
        return PlanStatus.PAUSED
    if n(S.FAILED, S.ROLLBACK_FAILED):
        return PlanStatus.FAILED
    if control == "CANCEL" or (total and n(S.CANCELLED) == total):
        return PlanStatus.CANCELLED
    if n(S.ROLLED_BACK) and not n(S.COMPLETED):
        return PlanStatus.ROLLED_BACK
    return PlanStatus.COMPLETED


def decide(
    command: Command, status: S, control: str | None = None, force: bool = False
) -> Decision:
    """What `command` does to a task in `status` with a pending `control` flag; `force`
    (resume, retry, rollback) lets the run apply its config over a newer task's."""
    if status is S.SUPERSEDED and command in (Command.RETRY, Command.ROLLBACK):
        return _superseded(command, force)
    return _DECIDERS[command](status, control)


def _superseded(command: Command, force: bool) -> Decision:
    """A superseded task's tenant belongs to a newer task: retry or roll it back only when
    forced (the operator's decision, recorded)."""
    if force:
        return Decision(Effect.NOW, S.PENDING, note="forced: applies over the newer task")
    hint = f"; {command.value} --force applies it anyway"
    return Decision(Effect.REFUSE, code=Code.TASK_SUPERSEDED, note=SUPERSEDED_NOTE + hint)
