"""The notification outbox in Redis: its two scripts, their arguments and their typed replies.

The Lua prelude queues every event a receiver may want in `deployer:notify:outbox` (while a
worker delivering notifications keeps `deployer:notify:active` alive), with its fields in
`deployer:notify:event:{eventId}`. lua/notify_claim.lua fans new events out to each
receiver's queue (`deployer:notify:due:{receiver}`) and claims the due deliveries of the
receivers whose thread is free; lua/notify_settle.lua records what the attempts did.

Which receivers, how many per claim, how long a claim holds and how failures back off is
deployer/notify's to decide; this module only carries it to the scripts and back.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis

from deployer.errors import ScriptReplyError
from deployer.state import keys, scripts


@dataclass(frozen=True)
class Delivery:
    """One attempt to claim: this event for this receiver, the how-many-th time."""

    receiver: str
    event_id: str
    attempt: int
    fields: dict[str, str]


@dataclass(frozen=True)
class Attempt:
    delivery: Delivery
    ok: bool
    #: What the receiver answered ("HTTP 500", "timed out after 5s", ...).
    detail: str


class Receiver(NamedTuple):
    """A receiver as a claim sees it: the event types it wants, and whether to claim its
    due deliveries now (False: its thread is still busy; new events are queued for it)."""

    name: str
    events: Collection[str]
    claim: bool


def deliveries(raw: Sequence[Any]) -> list[Delivery]:
    """notify_claim.lua's flat records: receiver, event id, attempt, event fields (JSON)."""
    if len(raw) % 4:
        raise ScriptReplyError(f"notify_claim.lua answered {len(raw)} values")
    out = []
    for i in range(0, len(raw), 4):
        name, event_id, attempt, fields = raw[i : i + 4]
        out.append(Delivery(str(name), str(event_id), int(attempt), json.loads(fields)))
    return out


class DeliveryQueues:
    """The outbox and the receivers' delivery queues: claim, then settle (a script each)."""

    def __init__(self, r: redis.Redis) -> None:
        self._claim = scripts.load(r, "notify_claim")
        self._settle = scripts.load(r, "notify_settle")

    def claim(
        self,
        receivers: Sequence[Receiver],
        *,
        now_ms: int,
        batch: int,
        call_ms: int,
        margin_ms: int,
        active_ms: int,
    ) -> list[Delivery]:
        """Fan new events out to every receiver's queue; claim up to `batch` due deliveries
        of each receiver to claim for, each held past its attempt (its place in the batch x
        `call_ms` + `margin_ms`); keep the outbox on for `active_ms`."""
        args: list[str | int] = [now_ms, batch, call_ms, margin_ms, active_ms]
        for receiver in receivers:
            args += [receiver.name, ",".join(receiver.events), "1" if receiver.claim else "0"]
        return deliveries(self._claim(keys=[keys.NOTIFY_OUTBOX, keys.NOTIFY_ACTIVE], args=args))

    def settle(
        self,
        attempts: Sequence[Attempt],
        *,
        now_ms: int,
        max_attempts: int,
        backoff_ms: int,
        backoff_cap_ms: int,
        events_maxlen: int,
    ) -> int:
        """Record what the attempts did (a failure due again after its backoff, or given up
        after `max_attempts`); how many were still this worker's to settle."""
        args: list[str | int] = [now_ms, max_attempts, backoff_ms, backoff_cap_ms, events_maxlen]
        for a in attempts:
            args += [a.delivery.receiver, a.delivery.event_id, "ok" if a.ok else "fail",
                     a.detail[:300]]  # fmt: skip
        return int(self._settle(keys=[keys.EVENTS], args=args))
