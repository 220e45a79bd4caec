"""The typed replies of the stage scripts: what a stage's round trips decided.

`Gate` (lua/stage_begin.lua), `EndVerdict` (lua/stage_end.lua) and `FailVerdict`
(lua/task_fail.lua) are what the executor branches on, exhaustively (mypy: assert_never);
`StageGate` and `StageEnd` carry them with their details. They live apart from the script
loader (scripts.py, which re-exports the enums and `verdict`) so the executor reads a
reply without importing anything that runs a script. A verdict no caller knows is a
`ScriptReplyError` where the reply is decoded — loud — never read as the nearest known
answer (an unknown stage verdict once meant "run the steps").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, TypeVar

from deployer.errors import ScriptReplyError


class Gate(StrEnum):
    """What stage_begin.lua decided about a stage message."""

    OK = "OK"
    #: Another run owns the task now (token), or it is no longer in flight.
    STALE = "STALE"
    #: Another run holds the tenant lease: ask again in a moment.
    BUSY = "BUSY"
    PAUSED = "PAUSED"
    CANCELLED = "CANCELLED"
    #: This very step was delivered more than the redelivery cap: give up.
    REDELIVERED = "REDELIVERED"
    #: The message's plan or tenant is not its task's: nothing touched.
    FORGED = "FORGED"
    #: A newer task deployed the tenant since (detail: its id): not applied.
    SUPERSEDED = "SUPERSEDED"


class EndVerdict(StrEnum):
    """What stage_end.lua did with a finished stage."""

    #: Checkpointed; the chain goes on.
    OK = "OK"
    #: Checkpointed the last stage: the task finished.
    DONE = "DONE"
    STALE = "STALE"
    FORGED = "FORGED"


class FailVerdict(StrEnum):
    """What task_fail.lua did: the task's new status, or why it left the task alone."""

    FAILED = "FAILED"
    ROLLBACK_FAILED = "ROLLBACK_FAILED"
    STALE = "STALE"
    FORGED = "FORGED"


E = TypeVar("E", bound=StrEnum)


def verdict(kind: type[E], raw: Any, script: str) -> E:
    """The enum member a script answered; ScriptReplyError for anything else."""
    try:
        return kind(str(raw))
    except ValueError:
        raise ScriptReplyError(f"{script}.lua answered {raw!r}: not a {kind.__name__}") from None


@dataclass(frozen=True)
class StageGate:
    """What the start-of-stage round trip decided (lua/stage_begin.lua)."""

    verdict: Gate
    #: STALE: the task's status; BUSY: the lease holder; REDELIVERED: the delivery count;
    #: FORGED: the task's plan/tenant; SUPERSEDED: the newer task; OK: the status before.
    detail: str = ""
    #: OK: this stage (re)took the tenant lease.
    acquired: bool = False
    #: The tenant's acquisition count when this stage (re)took the lease, else 0.
    epoch: int = 0

    @classmethod
    def from_reply(cls, raw: list[str]) -> StageGate:
        """`{verdict, detail}`, and for OK also `acquired ('1'/'0'), epoch`."""
        gate = verdict(Gate, raw[0] if raw else None, "stage_begin")
        acquired = gate is Gate.OK and len(raw) > 3 and raw[2] == "1"
        return cls(gate, raw[1] if len(raw) > 1 else "", acquired, int(raw[3]) if acquired else 0)


class StageEnd(NamedTuple):
    """What the end-of-stage round trip did (lua/stage_end.lua)."""

    verdict: EndVerdict
    #: DONE: tasks waiting in the plan's queue (+1 when its wave step is due), else 0.
    waiting: int = 0

    @classmethod
    def from_reply(cls, raw: list[str]) -> StageEnd:
        """`{verdict, detail}`, and for DONE also the count of tasks waiting."""
        end = verdict(EndVerdict, raw[0] if raw else None, "stage_end")
        return cls(end, int(raw[2]) if end is EndVerdict.DONE and len(raw) > 2 else 0)


def fail_verdict(raw: list[str]) -> FailVerdict:
    """task_fail.lua's reply: the task's new status, or why it was left alone."""
    return verdict(FailVerdict, raw[0] if raw else None, "task_fail")
