"""Parked stage re-sends in Redis: the state side of the push path (deployer/parking.py).

A waiting HealthCheck's re-send is one member of the `deployer:parked` zset (task id -> ms
due) with its hash `deployer:park:{taskId}` (the signature, the run's token, what wakes it),
a pointer from its tenant to it (`deployer:park-tenant:{tenantId}`, so an ack finds it) and
the acks that came while no re-send was parked (`deployer:park-acks:{tenantId}`). A worker
that popped re-sends records them in `deployer:worker-sends:{node}` until they are sent; the
liveness sweep reads that record when the worker dies.

Two scripts change all of it: lua/park.lua parks one re-send (a stage's pool process) and
lua/park_tick.lua applies a worker's acks and pops what is due (its parking thread). What
is parked and their replies are typed here: `Resend`, `ParkVerdict` and `Tick`. When to
park, for how long and how often to tick is deployer/parking.py's to decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

import redis

from deployer.errors import ScriptReplyError
from deployer.state import keys, scripts
from stages.types import WakeOn

#: How long an ack that found no parked re-send (its poll was running) is remembered.
ACKS_TTL_MS = 30_000
#: How long a tenant's park pointer outlives the due time (acks for it are recorded).
POINTER_GRACE_MS = 30_000
#: How long a worker's sends record lives without a pop (it is cleared at the next tick).
SENDS_TTL_MS = 120_000


class ParkVerdict(StrEnum):
    """What lua/park.lua did with a re-send."""

    #: Parked: due at its time, or earlier when an instance it waits for acks.
    OK = "OK"
    #: An awaited ack came while the poll ran: nothing parked, re-send at once.
    NOW = "NOW"
    #: The run lost the task (its token is not the task's): send nothing.
    STALE = "STALE"


class Acked(NamedTuple):
    """One instance's ack, as the tick applies it."""

    tenant_id: str
    service: str
    instance: str
    #: The version it made visible; "" when the ack named none.
    version: str


@dataclass
class Tick:
    """What one tick did: re-sends to send (task id, signature JSON), acks that woke a
    parked re-send, and when the next parked one is due (None: nothing parked)."""

    sends: list[tuple[str, str]]
    woken: int = 0
    next_due_ms: int | None = None

    @classmethod
    def from_reply(cls, raw: Sequence[Any]) -> Tick:
        """`{woken, next due ms or '', task id, sig, task id, sig, ...}` (park_tick.lua)."""
        if len(raw) < 2 or len(raw) % 2:
            raise ScriptReplyError(f"park_tick.lua answered {len(raw)} values: not a tick")
        pairs = raw[2:]
        sends = [(str(pairs[i]), str(pairs[i + 1])) for i in range(0, len(pairs), 2)]
        due = int(float(raw[1])) if raw[1] not in ("", None) else None
        return cls(sends, int(raw[0]), due)


@dataclass(frozen=True, kw_only=True)
class Resend:
    """A stage's re-send to park, as the stage knows it. When it is due is the parker's to
    say: `Parking.park` (deployer/parking.py) turns a countdown into times on its clock."""

    task_id: str
    tenant_id: str
    #: The run that parks it: a run that lost the task parks nothing (STALE).
    token: str
    #: token:stage:step:attempt, recorded when a worker pops it (deployer/liveness.py).
    position: str
    #: What wakes it before it is due.
    wake: WakeOn
    #: The signature to send, as JSON.
    sig: str


class ParkedResends:
    """Park a stage's re-send, and a worker's tick over all parked ones: one script each."""

    def __init__(self, r: redis.Redis) -> None:
        self._park = scripts.load(r, "park")
        self._tick = scripts.load(r, "park_tick")

    def park(self, resend: Resend, *, now_ms: int, due_ms: int) -> ParkVerdict:
        """Park `resend`, due at `due_ms` unless its `wake` comes first."""
        task_id, tenant_id, wake = resend.task_id, resend.tenant_id, resend.wake
        raw = self._park(
            keys=[
                keys.task(task_id),
                keys.PARKED,
                keys.PARK.format(task_id=task_id),
                keys.PARK_TENANT.format(tenant_id=tenant_id),
                keys.PARK_ACKS.format(tenant_id=tenant_id),
            ],
            args=[
                resend.token, due_ms, now_ms, task_id, tenant_id, wake.service,
                "" if wake.version is None else str(wake.version), resend.position, resend.sig,
                due_ms - now_ms + POINTER_GRACE_MS, *wake.instances,
            ],
        )  # fmt: skip
        return scripts.verdict(ParkVerdict, raw[0] if raw else None, "park")

    def tick(
        self, *, node: str, now_ms: int, limit: int, sent: Sequence[str], acks: Sequence[Acked]
    ) -> Tick:
        """Forget the re-sends worker `node` sent since its last tick (`sent`), apply `acks`,
        and pop at most `limit` due re-sends (recorded as `node`'s until its next tick)."""
        raw = self._tick(
            keys=[keys.PARKED, keys.worker_sends(node)],
            args=[
                now_ms, limit, SENDS_TTL_MS, keys.PARK.format(task_id=""),
                keys.PARK_TENANT.format(tenant_id=""), keys.PARK_ACKS.format(tenant_id=""),
                keys.TASK.format(task_id=""), ACKS_TTL_MS, len(sent), *sent,
                *[part for ack in acks for part in ack],
            ],
        )  # fmt: skip
        return Tick.from_reply(raw)
