"""The outbox's two scripts, typed: claim deliveries (fanning new events out first), and
settle what the attempts did (deployer/state/lua/notify_claim.lua, notify_settle.lua)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import redis

from deployer.errors import ScriptReplyError
from deployer.settings import NotifyReceiver, Settings
from deployer.state import keys, scripts

#: Deliveries a receiver's thread takes per claim (sent one after another).
BATCH = 10
#: Beyond the calls' deadlines, how long a claim holds before another worker may retry it.
MARGIN_MS = 2000
#: The longest wait between two attempts.
BACKOFF_CAP_MS = 300_000
#: Events are queued while a worker delivering notifications claimed within this long.
ACTIVE_MS = 3_600_000


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


class Outbox:
    def __init__(self, r: redis.Redis, settings: Settings) -> None:
        self.r = r
        self.settings = settings
        self._claim = scripts.load(r, "notify_claim")
        self._settle = scripts.load(r, "notify_settle")

    def claim(
        self, receivers: Mapping[str, NotifyReceiver], ready: Iterable[str], now: int | None = None
    ) -> list[Delivery]:
        """Fan new events out to every receiver's queue; claim the due deliveries of the
        receivers in `ready` (their thread is free)."""
        free = set(ready)
        args: list[str | int] = [
            now if now is not None else int(time.time() * 1000),
            BATCH,
            int(self.settings.notify_timeout_seconds * 1000),
            MARGIN_MS,
            ACTIVE_MS,
        ]
        for name, receiver in receivers.items():
            args += [name, ",".join(receiver.events), "1" if name in free else "0"]
        raw = self._claim(keys=[keys.NOTIFY_OUTBOX, keys.NOTIFY_ACTIVE], args=args)
        if len(raw) % 4:
            raise ScriptReplyError(f"notify_claim.lua answered {len(raw)} values")
        out = []
        for i in range(0, len(raw), 4):
            name, event_id, attempt, fields = raw[i : i + 4]
            out.append(Delivery(str(name), str(event_id), int(attempt), json.loads(fields)))
        return out

    def settle(self, attempts: list[Attempt], now: int | None = None) -> int:
        """Record what the attempts did; returns how many were still this worker's."""
        if not attempts:
            return 0
        s = self.settings
        args: list[str | int] = [
            now if now is not None else int(time.time() * 1000),
            s.notify_max_attempts,
            int(s.notify_backoff_seconds * 1000),
            BACKOFF_CAP_MS,
            s.events_maxlen,
        ]
        for a in attempts:
            args += [a.delivery.receiver, a.delivery.event_id, "ok" if a.ok else "fail",
                     a.detail[:300]]  # fmt: skip
        return int(self._settle(keys=[keys.EVENTS], args=args))
