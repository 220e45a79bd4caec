"""`deployer metrics` serves what an operator graphs, scraped over real HTTP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ROOT, bg_tenant, plan, start_on_free_port, unique, wait_for, worker_env

DEPLOYER = Path(sys.executable).parent / "deployer"


@pytest.fixture()
def metrics_url() -> Iterator[str]:
    def start(port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(DEPLOYER), "metrics", "--port", str(port)],
            cwd=ROOT,
            env=worker_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def up(port: int) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    proc, port = start_on_free_port(start, up, timeout=20)
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # reaps it and closes its pipe


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_show_tasks_per_plan_stage_durations_and_rollbacks(worker, r, metrics_url):
    plan_id = unique()
    worker.send_task(
        "deployer.submit_plan", [plan(plan_id, [bg_tenant(f"{plan_id}-t{i}") for i in range(3)])]
    )
    wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED", what="done")
    m = scrape(metrics_url)
    assert value(m, "deployer_plan_tasks", plan_id=plan_id, status="COMPLETED") == 3
    assert value(m, "deployer_plan_tasks", plan_id=plan_id, status="FAILED") == 0
    assert value(m, "deployer_plan_info", plan_id=plan_id, status="COMPLETED") == 1
    assert value(m, "deployer_stage_duration_seconds_count", stage="blue-green-gateway") >= 3
    assert value(m, "deployer_task_transitions_total", status="COMPLETED") >= 3
    assert value(m, "deployer_inflight_tasks") >= 0
    assert (("deployer_lease_conflicts_total", frozenset({("plan_id", plan_id)}))) in m

    worker.send_task("deployer.rollback", [{"planId": plan_id}], {"by": "test"})
    wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "ROLLED_BACK", what="back")
    wait_for(
        lambda: value(scrape(metrics_url), "deployer_rollbacks_total", outcome="rolled_back") >= 3,
        what="rollbacks counted",
    )
    m = scrape(metrics_url)
    assert value(m, "deployer_plan_tasks", plan_id=plan_id, status="ROLLED_BACK") == 3
    assert value(m, "deployer_rollbacks_total", outcome="started") >= 3


def failing_tenant(tenant: str) -> dict:
    """Fails at its portal stage (the fleet refuses it)."""
    return bg_tenant(tenant, trunkGroup="tg-1", calledNumberRules="4001",
                     serviceNames=["blue-green-gateway", "portal"])  # fmt: skip


def test_counters_answer_failures_by_stage_and_code_rejections_and_plan_ends(
    worker, r, metrics_url, session_fleet
):
    from deployer.fleet import Behaviour

    before = scrape(metrics_url)
    bad = unique("mx-bad")
    session_fleet.behave(bad, Behaviour(reject=True))
    plan_id = unique()
    worker.send_task(
        "deployer.submit_plan",
        [plan(plan_id, [bg_tenant(f"{plan_id}-ok"), failing_tenant(f"{bad}-1")])],
    )
    wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "FAILED", what="failed")
    worker.send_task("deployer.submit_plan", [{"planId": unique(), "tenants": "nope"}])
    worker.send_task("deployer.submit_plan", [plan(plan_id, [bg_tenant("other")])])  # conflict

    def grew(name: str, by: float = 1, **labels: str) -> bool:
        return value(scrape(metrics_url), name, **labels) >= value(before, name, **labels) + by

    wait_for(lambda: grew("deployer_rejections_total", code="PLAN_CONFLICT"), what="conflict")
    wait_for(lambda: grew("deployer_rejections_total", code="PLAN_INVALID"), what="invalid")
    m = scrape(metrics_url)
    assert grew("deployer_task_failures_total", stage="portal", code="STEP_FAILED")
    assert grew("deployer_events_total", type="PLAN_FAILED")
    assert grew("deployer_task_transitions_total", status="FAILED")
    assert grew("deployer_stage_duration_seconds_count", stage="blue-green-gateway")
    # cumulative buckets end with +Inf == count
    count = value(m, "deployer_stage_duration_seconds_count", stage="blue-green-gateway")
    assert value(m, "deployer_stage_duration_seconds_bucket", stage="blue-green-gateway",
                 le="+Inf") == count  # fmt: skip
    # the plan's own history says how it ended, with its counts
    ends = [f for _, f in r.xrange(f"deployer:events:plan:{plan_id}") if f["type"] == "PLAN_FAILED"]
    assert len(ends) == 1 and ends[0]["failed"] == "1" and ends[0]["completed"] == "1"
    failed = [f for _, f in r.xrange(f"deployer:events:plan:{plan_id}")
              if f["type"] == "TASK_FAILED"]  # fmt: skip
    assert failed[0]["code"] == "STEP_FAILED" and failed[0]["stage"] == "portal"


def test_gauges_read_workers_parked_and_approval_waits_without_scanning(r, metrics_url):
    import time

    now = int(time.time() * 1000)
    r.zadd("deployer:workers", {"mx-node:1:a": now})
    r.zadd("deployer:parked", {"task-mx:t": now + 60_000})  # due later: no worker sends it
    plan_id = unique("mx-appr")
    waiting = {"planId": plan_id, "waveState": "AWAITING_APPROVAL"}
    r.hset(f"deployer:plan:{plan_id}", mapping=waiting)
    r.zadd("deployer:awaiting-approval", {plan_id: now - 120_000, "gone-plan": now})
    try:
        m = scrape(metrics_url)
        assert value(m, "deployer_workers_alive") >= 1
        assert value(m, "deployer_parked_tasks") >= 1
        assert value(m, "deployer_parked_overdue_seconds") == 0
        assert value(m, "deployer_plan_awaiting_approval_seconds", plan_id=plan_id) >= 119
        assert value(m, "deployer_plans_awaiting_approval") >= 1
        # a plan that no longer waits (or no longer exists) is dropped from the index
        assert r.zscore("deployer:awaiting-approval", "gone-plan") is None
    finally:
        r.zrem("deployer:workers", "mx-node:1:a")
        r.zrem("deployer:parked", "task-mx:t")
        r.zrem("deployer:awaiting-approval", plan_id)
        r.delete(f"deployer:plan:{plan_id}")


def test_a_cancelled_plan_says_so_once_and_the_event_queues_its_notification(r):
    """A plan cancelled before any task ran: PLAN_CANCELLED from the cancel script itself,
    with its counts, and its notification in the outbox in the same script."""
    from deployer.lifecycle import Command
    from deployer.notify.outbox import Outbox
    from tasks.runtime import controller, settings
    from tests.helpers import task_rows

    Outbox(r, settings()).claim({}, [])  # a worker delivers notifications (their outbox is on)
    payload = plan(unique(), [bg_tenant(unique("t")) for _ in range(3)])
    plan_id, rows = task_rows(payload, settings())
    assert controller().planner.store.create_plan(plan_id, rows, 10, "r-")  # never sent
    assert controller().execute(Command.CANCEL, {"planId": plan_id}, by="ops")["ok"]
    ends = [(i, f) for i, f in r.xrange(f"deployer:events:plan:{plan_id}")
            if f["type"].startswith("PLAN_") and f["type"] != "PLAN_CREATED"
            and f["type"] != "PLAN_CANCEL"]  # fmt: skip
    assert [f["type"] for _, f in ends] == ["PLAN_CANCELLED"]
    assert ends[0][1]["cancelled"] == "3" and ends[0][1]["total"] == "3"
    queued = r.hgetall(f"deployer:notify:event:{ends[0][0]}")
    assert queued["type"] == "PLAN_CANCELLED" and queued["plan.status"] == "CANCELLED"


def test_a_failing_maintenance_duty_is_counted_for_every_worker_and_exported(r, metrics_url):
    """A duty that fails on every pass shows as `deployer_maintenance_failures_total{duty}`
    (the loop counts each failed pass in Redis); a count that cannot be written (the store
    that failed the pass) never stops the loop."""
    from deployer.maintenance import Duty, MaintenanceLoop
    from deployer.state.workers import count_duty_failure
    from tests.helpers import unique, wait_for

    name = f"broken-{unique()}"
    counts: list[str] = []

    def count(duty: str) -> None:
        count_duty_failure(r, duty)
        counts.append(duty)
        if len(counts) == 2:
            raise redis.ConnectionError("the count itself failed")

    def broken() -> None:
        raise RuntimeError("a bad pass")

    loop = MaintenanceLoop([Duty(name, broken, 0.01)], on_failure=count)
    loop.start()
    try:
        wait_for(lambda: len(counts) >= 4, what="failed passes counted after a failed count")
    finally:
        loop.stop()
    stored = int(r.hget("deployer:stats", f"mf|{name}") or 0)
    assert stored == len(counts) == loop.failures[name]
    assert value(scrape(metrics_url), "deployer_maintenance_failures_total", duty=name) == stored
