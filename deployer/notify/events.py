"""The events that notify: the one list of their names (settings validate receivers against
it, the Lua prelude queues exactly these in the outbox, docs list them)."""

from __future__ import annotations

from enum import StrEnum


class NotifyEvent(StrEnum):
    """An event type (in `deployer:events`) that receivers of DEPLOYER_NOTIFY may ask for."""

    #: A wave waits for `deployer approve` (strategy approval first/every).
    WAVE_AWAITING_APPROVAL = "WAVE_AWAITING_APPROVAL"
    #: A failure more than the strategy's failure budget allows.
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    #: The budget paused the plan (onExceed pause) ...
    PLAN_AUTO_PAUSED = "PLAN_AUTO_PAUSED"
    #: ... or started rolling it back (onExceed rollback).
    PLAN_AUTO_ROLLBACK = "PLAN_AUTO_ROLLBACK"
    #: A plan's tasks all ended (statuses: README's lifecycle table).
    PLAN_COMPLETED = "PLAN_COMPLETED"
    PLAN_FAILED = "PLAN_FAILED"
    PLAN_CANCELLED = "PLAN_CANCELLED"
    PLAN_ROLLED_BACK = "PLAN_ROLLED_BACK"
    #: A wave's gate webhook said no (held; asked again later).
    GATE_REFUSED = "GATE_REFUSED"


#: Every name, for a receiver's `"events": ["*"]`.
ALL = tuple(e.value for e in NotifyEvent)
