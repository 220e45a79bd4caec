"""kill -9 of a worker while a stage waits or runs: the tenant is re-driven and lands once."""

from __future__ import annotations

import json

import pytest

from deployer.client import DeployerClient
from deployer.fleet import Behaviour, Fleet
from deployer.models import task_id_for
from deployer.settings import DEFAULT_INSTANCES, Settings
from tests.e2e.faults.checks import failures, outcome
from tests.helpers import bg_tenant, plan, unique, wait_for

pytestmark = pytest.mark.e2e


def _cursor_attempt(r, task_id: str) -> int:
    cursor = r.hget(f"deployer:task:{task_id}", "cursor") or "x:0:0:0"
    return int(cursor.rsplit(":", 1)[1])


def test_worker_killed_during_a_health_check_wait_is_redriven_once(supervisor, r, session_fleet):
    tenant, plan_id = unique("killhc"), unique()
    task_id = task_id_for(plan_id, tenant)
    # The fleet reports the new version only after 3 s: the stage polls (re-scheduled, unacked).
    session_fleet.behave(tenant, Behaviour(delay=3.0))
    supervisor.start("w1")
    DeployerClient().submit(plan(plan_id, [bg_tenant(tenant)]))
    wait_for(lambda: _cursor_attempt(r, task_id) >= 1, what="stage waiting in its HealthCheck")
    first_token = r.hget(f"deployer:task:{task_id}", "token")

    supervisor.kill("w1")
    supervisor.start("w2")

    wait_for(
        lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED",
        timeout=30,
        what="plan COMPLETED after the kill",
    )
    got = outcome(r, plan_id, version=20)
    assert got.statuses == {"COMPLETED": 1}
    assert r.hget(f"deployer:task:{task_id}", "token") != first_token
    assert got.redriven >= 1 and not got.completed_twice and not got.wrong_version
    assert not got.stuck
    print(f"\nkill during HealthCheck wait: kills=1 redriven={got.redriven} lost=0")


@pytest.mark.faults
def test_worker_killed_while_waiting_for_a_busy_tenant_is_redriven(supervisor, r):
    tenant, plan_id = unique("tenant"), unique()
    task_id = task_id_for(plan_id, tenant)
    # Another run holds the tenant: the stage waits (re-scheduled with a countdown, unacked).
    r.set(f"deployer:lease:{tenant}", "someone-else.1", px=60_000)
    supervisor.start("w1")
    DeployerClient().submit(plan(plan_id, [bg_tenant(tenant)]))
    wait_for(lambda: tenant in supervisor.log("w1").read_text(), what="stage received")
    wait_for(lambda: r.zscore("deployer:inflight", task_id), what="task watched")

    supervisor.kill("w1")
    r.delete(f"deployer:lease:{tenant}")  # the other run ends
    supervisor.start("w2")

    wait_for(
        lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED",
        timeout=30,
        what="plan COMPLETED after the kill",
    )
    got = outcome(r, plan_id, version=20)
    assert got.statuses == {"COMPLETED": 1} and not got.stuck
    assert got.redriven >= 1 and not got.completed_twice and not got.wrong_version


@pytest.mark.faults
def test_worker_killed_mid_stage_is_redriven_and_writes_once(supervisor, redis_server, r):
    """The target Redis is stopped (SIGSTOP) so the worker is provably inside the stage."""
    target = redis_server("target")
    s = Settings()
    free = {svc: ["127.0.0.1:0"] * len(addrs) for svc, addrs in DEFAULT_INSTANCES.items()}
    fleet = Fleet(free, target.url, s.key_prefix, s.pubsub_topic, s.verify_path, Behaviour())
    fleet.start()
    try:
        supervisor.env["DEPLOYER_TARGET_REDIS_URL"] = target.url
        supervisor.env["DEPLOYER_INSTANCES"] = json.dumps(fleet.addresses)
        supervisor.start("w1")
        tenant, plan_id = unique("tenant"), unique()
        task_id = task_id_for(plan_id, tenant)

        target.pause()
        DeployerClient(Settings()).submit(plan(plan_id, [bg_tenant(tenant)]))
        wait_for(
            lambda: r.hget(f"deployer:task:{task_id}", "status") == "RUNNING",
            timeout=20,
            what="stage started (blocked on the stopped target)",
        )
        first_token = r.hget(f"deployer:task:{task_id}", "token")
        supervisor.kill("w1")
        target.resume()
        supervisor.start("w2")

        wait_for(
            lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED",
            timeout=40,
            what="plan COMPLETED after a kill mid-stage",
        )
        got = outcome(r, plan_id, version=20, target=target.client())
        final_token = r.hget(f"deployer:task:{task_id}", "token")
        assert final_token != first_token
        assert target.client().get(f"deployer:fence:{tenant}") == final_token
        assert got.statuses == {"COMPLETED": 1}
        assert got.redriven >= 1 and not got.completed_twice and not got.wrong_version
        print(f"\nkill mid-stage: kills=1 redriven={got.redriven} {first_token}->{final_token}")
    finally:
        fleet.stop()


@pytest.mark.faults
@pytest.mark.timeout(240)
def test_worker_killed_while_dispatching_a_big_plan_loses_no_tenant(supervisor, r):
    """kill -9 the moment a plan's first fill has given out slots: its worker is building
    those tasks' first runs and sending their chains. Tasks given a slot whose chain never
    left are re-driven after the pending grace, their run built from the stored config;
    the redelivered submit fills and sends whatever is still queued."""
    n, plan_id = 400, unique("bigkill")
    supervisor.start("w1")
    DeployerClient().submit(
        plan(plan_id, [bg_tenant(f"{plan_id}-t{i}") for i in range(n)], maxConcurrency=300)
    )
    wait_for(
        lambda: int(r.hget(f"deployer:plan:{plan_id}", "inflight") or 0) > 0,
        interval=0.001,
        what="first slots given",
    )
    supervisor.kill("w1")

    ids = r.lrange(f"deployer:plan:{plan_id}:tenants", 0, -1)
    pipe = r.pipeline(transaction=False)
    for task_id in ids:
        pipe.hmget(f"deployer:task:{task_id}", "dispatchedAt", "run")
    rows = pipe.execute()
    given = sum(1 for dispatched, _run in rows if dispatched)
    unsent = sum(1 for dispatched, run in rows if dispatched and not run)
    queued = r.llen(f"deployer:plan:{plan_id}:queue")
    supervisor.start("w2")

    wait_for(
        lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED",
        timeout=200,
        what="plan COMPLETED after a kill during its dispatch",
    )
    got = outcome(r, plan_id, version=20)
    print(
        f"\nkill during dispatch: slots given {given}, of which no run stored {unsent}, "
        f"still queued {queued}; redriven={got.redriven} completed={got.statuses['COMPLETED']}"
    )
    assert got.statuses == {"COMPLETED": n}, failures(r, plan_id)
    assert not got.stuck and not got.wrong_version and not got.completed_twice
    assert all(r.hexists(f"deployer:task:{task_id}", "run") for task_id in ids)
