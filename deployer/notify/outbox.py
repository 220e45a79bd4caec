"""The outbox as the notification thread uses it: claim deliveries (fanning new events out
first), and settle what the attempts did, with this module's batch, lease and backoff
(the scripts and their typed replies: deployer/state/outbox.py)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import redis

from deployer.settings import NotifyReceiver, Settings
from deployer.state.outbox import Attempt as Attempt  # re-exported: the thread builds them
from deployer.state.outbox import Delivery as Delivery
from deployer.state.outbox import DeliveryQueues, Receiver

#: Deliveries a receiver's thread takes per claim (sent one after another).
BATCH = 10
#: Beyond the calls' deadlines, how long a claim holds before another worker may retry it.
MARGIN_MS = 2000
#: The longest wait between two attempts.
BACKOFF_CAP_MS = 300_000
#: Events are queued while a worker delivering notifications claimed within this long.
ACTIVE_MS = 3_600_000


class Outbox:
    def __init__(self, r: redis.Redis, settings: Settings) -> None:
        self.settings = settings
        self.queues = DeliveryQueues(r)

    def claim(
        self, receivers: Mapping[str, NotifyReceiver], ready: Iterable[str], now: int | None = None
    ) -> list[Delivery]:
        """Fan new events out to every receiver's queue; claim the due deliveries of the
        receivers in `ready` (their thread is free)."""
        free = set(ready)
        return self.queues.claim(
            [Receiver(name, r.events, name in free) for name, r in receivers.items()],
            now_ms=now if now is not None else int(time.time() * 1000),
            batch=BATCH,
            call_ms=int(self.settings.notify_timeout_seconds * 1000),
            margin_ms=MARGIN_MS,
            active_ms=ACTIVE_MS,
        )

    def settle(self, attempts: list[Attempt], now: int | None = None) -> int:
        """Record what the attempts did; returns how many were still this worker's."""
        if not attempts:
            return 0
        s = self.settings
        return self.queues.settle(
            attempts,
            now_ms=now if now is not None else int(time.time() * 1000),
            max_attempts=s.notify_max_attempts,
            backoff_ms=int(s.notify_backoff_seconds * 1000),
            backoff_cap_ms=BACKOFF_CAP_MS,
            events_maxlen=s.events_maxlen,
        )
