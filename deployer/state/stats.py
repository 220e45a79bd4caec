"""What the metrics exporter reads, as one typed snapshot: the counters of `deployer:stats`,
the gauges of the zsets the workers keep, the newest plans, the plans awaiting approval and
a sample of the tasks in flight.

The counters are kept by the code that writes what they count, in the same round trip (the
Lua prelude's `observe`, `Store.reject`, the dead-letter and notification writers, retention):
a field `kind|rest` holds one count (`ev|TASK_FAILED`, `fail|portal|STEP_FAILED`, ...).
Nothing here scans tasks or reads the event stream, so a scrape costs the same with 10 plans
or 100,000 tenants.

A scrape is three round trips, whatever it shows: the indices and the gauges in one
pipeline, then the plan hashes those indices name in another, then the inflight tasks'
cursors (`read_tasks`: only store.py reads a task hash) — it was seven, two per family of
reads and one for the gauges.
deployer/metrics.py turns the snapshot into Prometheus families; what each number means to
an operator is there and in docs/operators.md.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from deployer.state import keys
from deployer.state.plans import PlanField, PlanRecord
from deployer.state.record import Field, TaskRecord
from deployer.state.store import read_tasks


def grouped(stats: Mapping[str, str]) -> dict[str, list[tuple[str, int]]]:
    """The `deployer:stats` hash by kind: field `kind|rest` -> {kind: [(rest, count), ...]};
    a field whose value is not a count is left out. Absent kinds read as []."""
    groups: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for name, raw in stats.items():
        kind, _, rest = name.partition("|")
        try:
            groups[kind].append((rest, int(raw)))
        except ValueError:
            continue
    return groups


@dataclass(frozen=True)
class Gauges:
    """The counters hash and the cheap gauges, read together at `now_ms`."""

    #: `deployer:stats` as stored (`grouped` reads it).
    stats: dict[str, str]
    #: HealthChecks parked (re-sends due later or waiting for acks).
    parked: int
    #: When the most overdue parked re-send is (was) due, ms; None when none is parked.
    oldest_parked_due_ms: float | None
    #: Workers whose heartbeat is fresher than the heartbeat interval.
    workers_alive: int
    #: The newest worker heartbeat, ms; None when no worker ever beat.
    newest_heartbeat_ms: float | None
    #: Notifications in the outbox, not yet handed to a receiver's queue.
    outbox: int
    #: Notifications waiting in each receiver's queue, in the order the receivers were asked.
    queued: dict[str, int]
    #: When this was read (ms): the gauges' "now".
    now_ms: int


@dataclass(frozen=True)
class Awaiting:
    """A plan in the approval index (the prelude adds it at WAVE_AWAITING_APPROVAL)."""

    plan_id: str
    #: When its wave started waiting, ms.
    since_ms: float
    #: The plan's wave state now ('' when the plan or the field is gone): a plan that moved
    #: on otherwise (cancelled, expired) is still in the index until it is forgotten.
    wave_state: str


@dataclass(frozen=True)
class Snapshot:
    """Everything one scrape shows, read in three round trips."""

    gauges: Gauges
    #: The newest plans that still exist, newest first: (plan id, its whole hash read).
    plans: list[tuple[str, PlanRecord]]
    awaiting: list[Awaiting]
    #: The first tasks of the inflight index (up to the sample), their `cursor` only.
    inflight: list[TaskRecord]


def _ask_gauges(pipe: Any, receivers: Sequence[str], heartbeat_ms: int, now_ms: int) -> None:
    """Queue the gauges' reads on `pipe` (`_gauges` reads their replies)."""
    pipe.hgetall(keys.STATS)
    pipe.zcard(keys.PARKED)
    pipe.zrange(keys.PARKED, 0, 0, withscores=True)
    pipe.zcount(keys.WORKERS, now_ms - heartbeat_ms, "+inf")
    pipe.zrange(keys.WORKERS, -1, -1, withscores=True)
    pipe.zcard(keys.NOTIFY_OUTBOX)
    for name in receivers:
        pipe.zcard(keys.notify_due(name))


def _gauges(replies: Sequence[Any], receivers: Sequence[str], now_ms: int) -> Gauges:
    stats, parked, oldest, alive, newest, outbox, *queued = replies
    return Gauges(
        stats=dict(stats),
        parked=int(parked),
        oldest_parked_due_ms=float(oldest[0][1]) if oldest else None,
        workers_alive=int(alive),
        newest_heartbeat_ms=float(newest[0][1]) if newest else None,
        outbox=int(outbox),
        queued={name: int(n) for name, n in zip(receivers, queued, strict=True)},
        now_ms=now_ms,
    )


def read_gauges(
    client: redis.Redis, receivers: Iterable[str], heartbeat_ms: int, now_ms: int
) -> Gauges:
    """The counters and the cheap gauges alone, in one round trip."""
    names = tuple(receivers)
    pipe = client.pipeline(transaction=False)
    _ask_gauges(pipe, names, heartbeat_ms, now_ms)
    return _gauges(pipe.execute(), names, now_ms)


def read_snapshot(
    client: redis.Redis,
    *,
    recent_plans: int,
    awaiting_limit: int,
    inflight_sample: int,
    receivers: Iterable[str],
    heartbeat_ms: int,
    now_ms: int,
) -> Snapshot:
    """What a scrape shows: the indices and the gauges, then the plan hashes they name
    (each recent plan's whole hash, each awaiting plan's wave state), then each inflight
    task's cursor."""
    names = tuple(receivers)
    pipe = client.pipeline(transaction=False)
    pipe.zrevrange(keys.PLANS, 0, recent_plans - 1)
    pipe.zrange(keys.AWAITING_APPROVAL, 0, awaiting_limit - 1, withscores=True)
    pipe.zrange(keys.INFLIGHT, 0, inflight_sample - 1)
    _ask_gauges(pipe, names, heartbeat_ms, now_ms)
    plan_ids, waiting, task_ids, *gauge_replies = pipe.execute()
    plan_ids = [str(p) for p in plan_ids]
    task_ids = [str(t) for t in task_ids]
    hashes: list[Any] = []
    if plan_ids or waiting:
        pipe = client.pipeline(transaction=False)
        for plan_id in plan_ids:
            pipe.hgetall(keys.plan(plan_id))
        for plan_id, _ in waiting:
            pipe.hget(keys.plan(plan_id), PlanField.WAVE_STATE.value)
        hashes = pipe.execute()
    plans, states = hashes[: len(plan_ids)], hashes[len(plan_ids) :]
    inflight = read_tasks(client, task_ids, [Field.CURSOR]) if task_ids else []
    return Snapshot(
        gauges=_gauges(gauge_replies, names, now_ms),
        plans=[(p, PlanRecord.from_hash(h)) for p, h in zip(plan_ids, plans, strict=True) if h],
        awaiting=[
            Awaiting(str(p), float(since), str(state or ""))
            for (p, since), state in zip(waiting, states, strict=True)
        ],
        inflight=inflight,
    )


def forget_awaiting(client: redis.Redis, plan_ids: Sequence[str]) -> None:
    """Drop plans from the approval index (their wave no longer waits)."""
    if plan_ids:
        client.zrem(keys.AWAITING_APPROVAL, *plan_ids)
