"""The push path: a waiting HealthCheck parked in Redis, woken by instances' acks.

An instance that makes a tenant's version visible PUBLISHes an ack on the ack channel
(`{"tenantId","service","instance","version"}`, docs/contracts.md §2.1). While acks are
expected (`DEPLOYER_FLEET_ACKS`, or a step's `acks` param), a HealthCheck that is not yet
satisfied does not re-send its stage with a Celery countdown: it *parks* the re-send in
Redis (`park`), due when its background poll is (at most `DEPLOYER_ACK_POLLS_PER_MINUTE` per
instance per minute). A thread in every worker's main process (`ParkingThread`, a bootstep
in tasks/worker.py) listens to the acks and runs one script per tick (`tick`) that moves the
parked re-send of an acked tenant to "due now" and pops what is due, then sends it. The
stage then polls: an ack never confirms anything by itself, polling stays the truth.

Why parking rather than sending an extra message on an ack, with the countdown message left
to expire: a Celery countdown message is held in some worker's memory until its ETA and
cannot be taken back, so a wake would make two live messages of one stage (two polling
chains, the gate counting one as a redelivery). A parked re-send is one zset member per task
(a duplicate that parks again replaces it), popped atomically by exactly one worker, and
nothing is held in worker memory while it waits.

A worker killed between popping a re-send and sending it: the pop recorded the re-send's
position in `deployer:worker-sends:{node}`, which the liveness sweep reads like the stage
messages a dead worker held (deployer/liveness.py): the task is re-driven with a new token
within the heartbeat TTL, and whatever the dead worker may have sent is fenced off. Parked
re-sends themselves are in Redis, not in any worker: any live worker sends them when due.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from deployer.settings import Settings
from deployer.state.parked import Acked, ParkedResends, ParkVerdict
from deployer.state.parked import Resend as Resend  # re-exported: what `Parking.park` takes
from deployer.state.parked import Tick as Tick  # re-exported: what `Parking.tick` answers
from deployer.state.store import now_ms
from stages.types import WakeOn as WakeOn  # re-exported: the plugin interface owns it

log = logging.getLogger("deployer.parking")

#: Re-sends popped per tick (a tick with a full batch is followed by another at once).
POP_LIMIT = 500
#: Longest sleep of a parking thread: how late a re-send parked by another worker with a due
#: time closer than this may be sent.
MAX_IDLE_SECONDS = 0.25
#: Acks read from the channel per tick.
ACK_BATCH = 1000
#: An ack message longer than this is not read (an ack is ~100 bytes).
MAX_ACK_BYTES = 4096
#: How soon a lost ack subscription is tried again.
RESUBSCRIBE_SECONDS = 2.0


class Ack(BaseModel):
    """An instance's ack, as published on the ack channel (extra fields are ignored)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    tenant_id: StrictStr = Field(alias="tenantId", min_length=1, max_length=128)
    service: StrictStr = Field(min_length=1, max_length=128)
    instance: StrictStr = Field(min_length=1, max_length=256)
    version: StrictInt | StrictStr | None = None

    def args(self) -> list[str]:
        """tenant, service, instance, version ('' for none), as the tick's script reads them."""
        return list(self.acked())

    def acked(self) -> Acked:
        version = "" if self.version is None else str(self.version).strip()
        return Acked(self.tenant_id, self.service, self.instance, version)


def parse_ack(data: Any) -> Ack | None:
    """The ack in a pub/sub payload, or None for anything else (never raises)."""
    if not isinstance(data, str | bytes) or len(data) > MAX_ACK_BYTES:
        return None
    try:
        return Ack.model_validate(json.loads(data))
    except (ValueError, ValidationError, TypeError, RecursionError):
        return None


def ack_countdown(s: Settings, patience: float, waited: float) -> float:
    """The background re-poll while acks are expected: the patience split into equal steps,
    as few as keep each instance at most `ack_polls_per_minute` polls per minute of waiting
    (27 s of patience at 5/min: 13.5 s, 13.5 s), and never past the patience."""
    steps = max(1, math.floor(patience * s.ack_polls_per_minute / 60.0 + 1e-9))
    step = min(patience / steps, s.lease_ttl_seconds / 2)
    return max(0.0, min(step, patience - waited))


class Parking:
    """Parks a stage's re-send (a stage's pool process) and ticks (a worker's thread), on
    the clock of this process: the Redis side is deployer/state/parked.py."""

    def __init__(self, r: redis.Redis) -> None:
        self.parked = ParkedResends(r)

    def park(self, resend: Resend, countdown: float) -> ParkVerdict:
        """Park the stage's re-send, due in `countdown` seconds: OK parked, NOW an awaited
        ack came while the poll ran (nothing parked: re-send at once), STALE the run lost
        the task (send nothing)."""
        now = now_ms()
        return self.parked.park(resend, now_ms=now, due_ms=now + int(countdown * 1000))

    def tick(self, node: str, sent: list[str], acks: list[Ack], limit: int = POP_LIMIT) -> Tick:
        return self.parked.tick(
            node=node, now_ms=now_ms(), limit=limit, sent=sent, acks=[a.acked() for a in acks]
        )


class ParkingThread(threading.Thread):
    """Sends due parked re-sends and applies acks, in a worker's main process.

    Waits on the ack subscription (or, without one, on a timer) until the next parked re-send
    is due, at most MAX_IDLE_SECONDS; every tick is one script call. A malformed or forged
    ack is dropped; any error is logged and the next tick retries: the thread never dies of
    a bad message, and a lost ack only costs the wait until the background poll.
    """

    def __init__(
        self,
        parking: Parking,
        node: str,
        send: Callable[[str], None],
        acks: redis.Redis | None,
        channel: str,
    ) -> None:
        super().__init__(name="deployer-parking", daemon=True)
        self.parking, self.node, self.send = parking, node, send
        self.acks_redis, self.channel = acks, channel
        self.stopped = threading.Event()
        self.sent_total = 0
        self.acks_total = 0
        self.dropped_acks = 0
        self._pubsub: Any = None
        self._subscribe_after = 0.0

    def run(self) -> None:
        sent: list[str] = []
        unsent: list[tuple[str, str]] = []
        wait = 0.0
        while not self.stopped.is_set():
            try:
                acks = self._acks(wait)
                if self.stopped.is_set():
                    break
                tick = self.parking.tick(self.node, sent, acks)
                sent = []
                todo, unsent = [*unsent, *tick.sends], []
                for task_id, sig in todo:
                    try:
                        self.send(sig)
                    except Exception as exc:  # broker down: kept, and recorded as ours
                        log.warning("parking: re-send of %s failed (%s); retrying", task_id, exc)
                        unsent.append((task_id, sig))
                    else:
                        sent.append(task_id)
                self.sent_total += len(sent)
                wait = self._next_wait(tick, bool(unsent))
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("parking: redis unavailable (%s); next tick retries", exc)
                self._close()
                wait = 1.0
            except Exception:  # the thread must outlive any one bad tick
                log.exception("parking tick failed; next tick retries")
                wait = 1.0
        self._close()

    def _next_wait(self, tick: Tick, unsent: bool) -> float:
        if unsent:
            return 1.0
        if len(tick.sends) >= POP_LIMIT:
            return 0.0
        if tick.next_due_ms is None:
            return MAX_IDLE_SECONDS
        return max(0.0, min(MAX_IDLE_SECONDS, tick.next_due_ms / 1000 - time.time()))

    def _acks(self, wait: float) -> list[Ack]:
        """The acks that arrive within `wait` seconds (returns at the first, with whatever
        else is already there); sleeps `wait` without a subscription. A lost subscription
        never stops the ticks: parked re-sends still go out when due."""
        if self.acks_redis is None or time.monotonic() < self._subscribe_after:
            self.stopped.wait(wait)
            return []
        out: list[Ack] = []
        try:
            if self._pubsub is None:
                pubsub = self.acks_redis.pubsub(ignore_subscribe_messages=True)
                self._pubsub = pubsub
                pubsub.subscribe(self.channel)
            timeout = wait
            while len(out) < ACK_BATCH:
                message = self._pubsub.get_message(timeout=timeout)
                if message is None:
                    break
                timeout = 0.0
                if message.get("type") != "message":
                    continue
                ack = parse_ack(message.get("data"))
                if ack is None:
                    self.dropped_acks += 1
                    continue
                out.append(ack)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            log.warning("parking: ack subscription lost (%s); polling alone until it is back", exc)
            self._close()
            self._subscribe_after = time.monotonic() + RESUBSCRIBE_SECONDS
        self.acks_total += len(out)
        return out

    def _close(self) -> None:
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
            self._pubsub = None

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join(timeout)
