"""What the exporter and the history readers cost in round trips, and what they read.

A scrape of /metrics is three round trips whatever Redis holds (deployer/state/stats.py: the
indices and gauges, the plan hashes they name, the inflight tasks' cursors), four when it drops
plans from the approval index; a plan's history page is one. Counted on the connection:
every pipeline or command is one `send_packed_command`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from prometheus_client.core import Metric

from deployer import audit
from deployer.metrics import registry_for
from deployer.state import stats


class CountingConnection(redis.Connection):
    """A connection that counts what it sends: one packet per command or pipeline."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)


@pytest.fixture()
def counted(redis_url: str) -> Iterator[redis.Redis]:
    """A database of its own (exact figures: no other test's plans), on counting connections."""
    url = redis_url.rsplit("/", 1)[0] + "/12"
    redis.Redis.from_url(url).flushdb()
    client = redis.Redis.from_url(url, decode_responses=True, connection_class=CountingConnection)
    client.ping()  # the connection's handshake is not a read
    yield client
    client.flushdb()
    client.close()


def round_trips(read: Any) -> tuple[Any, int]:
    before = CountingConnection.sent
    out = read()
    return out, CountingConnection.sent - before


def samples(families: list[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def seed(r: redis.Redis) -> int:
    now = int(time.time() * 1000)
    r.zadd("deployer:plans", {"p-old": now - 1000, "p-new": now, "p-gone": now - 2000})
    done = {"status": "COMPLETED", "maxConcurrency": "5", "c:COMPLETED": "3",
            "m:leaseConflicts": "2"}  # fmt: skip
    r.hset("deployer:plan:p-old", mapping=done)
    waiting = {"status": "RUNNING", "waveState": "AWAITING_APPROVAL"}
    r.hset("deployer:plan:p-new", mapping=waiting)
    r.zadd("deployer:awaiting-approval", {"p-new": now - 90_000, "p-old": now - 5000})
    r.zadd("deployer:inflight", {"task-p-new:a": now, "task-p-new:b": now})
    r.hset("deployer:task:task-p-new:a", "cursor", "tok:1:0:2")  # between two polls
    r.hset("deployer:task:task-p-new:b", "cursor", "tok:0:0:0")
    r.zadd("deployer:workers", {"w1": now, "w0": now - 3_600_000})
    r.zadd("deployer:parked", {"task-p-new:a": now - 4000})
    r.zadd("deployer:notify:outbox", {"e1": now})
    r.zadd("deployer:notify:due:ops", {"e1": now, "e2": now})
    r.hset("deployer:stats", mapping={"ev|TASK_COMPLETED": "3", "rej|PLAN_INVALID": "1"})
    return now


def test_a_scrape_is_three_round_trips_and_shows_what_is_there(counted: redis.Redis) -> None:
    r = counted
    seed(r)
    registry = registry_for(r, receivers=["ops"], heartbeat_s=5.0)
    families, first = round_trips(lambda: list(registry.collect()))
    assert first == 4  # p-old no longer awaits approval: dropped from the index
    assert r.zrange("deployer:awaiting-approval", 0, -1) == ["p-new"]
    m = samples(families)
    assert m[("deployer_plan_info", (("plan_id", "p-old"), ("status", "COMPLETED")))] == 1
    assert m[("deployer_plan_info", (("plan_id", "p-new"), ("status", "RUNNING")))] == 1
    assert not any(labels == (("plan_id", "p-gone"),) for _, labels in m)
    assert m[("deployer_plan_tasks", (("plan_id", "p-old"), ("status", "COMPLETED")))] == 3
    assert m[("deployer_plan_max_concurrency", (("plan_id", "p-old"),))] == 5
    assert m[("deployer_lease_conflicts_total", (("plan_id", "p-old"),))] == 2
    assert m[("deployer_plans_awaiting_approval", ())] == 1
    assert m[("deployer_plan_awaiting_approval_seconds", (("plan_id", "p-new"),))] >= 89
    assert m[("deployer_inflight_tasks", ())] == 2
    assert m[("deployer_healthcheck_waiting_tasks", ())] == 1
    assert m[("deployer_workers_alive", ())] == 1
    assert m[("deployer_parked_tasks", ())] == 1
    assert m[("deployer_parked_overdue_seconds", ())] >= 4
    assert m[("deployer_notifications_queued", (("receiver", "-"),))] == 1
    assert m[("deployer_notifications_queued", (("receiver", "ops"),))] == 2
    assert m[("deployer_task_transitions_total", (("status", "COMPLETED"),))] == 3
    assert m[("deployer_rejections_total", (("code", "PLAN_INVALID"),))] == 1

    again, second = round_trips(lambda: list(registry.collect()))
    assert second == 3
    assert samples(again).keys() == m.keys()


def test_a_scrape_of_an_empty_redis_is_one_round_trip(counted: redis.Redis) -> None:
    snapshot, trips = round_trips(
        lambda: stats.read_snapshot(
            counted,
            recent_plans=50,
            awaiting_limit=10,
            inflight_sample=10,
            receivers=["ops"],
            heartbeat_ms=5000,
            now_ms=int(time.time() * 1000),
        )  # fmt: skip
    )
    assert trips == 1
    assert snapshot.plans == [] and snapshot.awaiting == [] and snapshot.inflight == []
    assert snapshot.gauges.queued == {"ops": 0} and snapshot.gauges.newest_heartbeat_ms is None


def test_a_plans_history_page_is_one_round_trip(counted: redis.Redis) -> None:
    r = counted
    for kind in ("PLAN_CREATED", "TASK_RUNNING", "TASK_COMPLETED"):
        audit.record(r, {"type": kind, "planId": "p1", "tenantId": "t1"})
    page, trips = round_trips(lambda: audit.history(r, plan_id="p1", count=2))
    assert trips == 1
    assert [f["type"] for _, f in page.events] == ["TASK_COMPLETED", "TASK_RUNNING"]
    assert page.more and page.older == 1 and not page.trimmed
    never, trips = round_trips(lambda: audit.history(r, plan_id="never"))
    assert trips == 1 and never.events == [] and not never.trimmed
    tenant, trips = round_trips(lambda: audit.history(r, tenant_id="t1", count=10))
    assert trips == 2  # its references, then their entries and its bounds
    assert [f["type"] for _, f in tenant.events][0] == "TASK_COMPLETED" and not tenant.trimmed
