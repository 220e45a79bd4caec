"""Lifecycle against the simulated fleet: checkpoints, pause mid-wait, leases, and the
forward/retry/rollback runs of docs/contracts.md §4."""

from __future__ import annotations

import json

import pytest

from deployer.fleet import Behaviour
from deployer.lifecycle import Command
from tests.helpers import bg_tenant, plan, unique, wait_for

PREFIX = "icc_ai_ops_srv:tenant_config:"
SERVICES = ["blue-green-gateway", "ob-service"]


@pytest.fixture()
def control(worker):
    from tasks.runtime import controller

    return controller()


def task_of(r, tenant):
    return r.hgetall(f"deployer:task:{r.get(f'deployer:tenant:{tenant}')}")


def status_of(r, tenant):
    return task_of(r, tenant).get("status")


def events_of(r, tenant):
    return [f for _, f in r.xrange("deployer:events") if f.get("tenantId") == tenant]


def two_stage_tenant(tenant, version=20, prev_version=19):
    return bg_tenant(tenant, version=version, prev_version=prev_version, serviceNames=SERVICES)


def only_bg(fleet, tenant):
    """blue-green-gateway instances converge for `tenant`; ob-service instances never do."""
    fleet.behave(tenant, Behaviour(only=frozenset(fleet.addresses["blue-green-gateway"])))


def submit(worker, r, plan_id, tenants, **extra):
    worker.send_task("deployer.submit_plan", [plan(plan_id, tenants, **extra)])
    wait_for(lambda: r.exists(f"deployer:plan:{plan_id}"), what="plan stored")


def test_forward_fails_then_rollback_restores_previous(worker, r, control, session_fleet):
    """Forward v20 (snapshot v19) fails at ob-service; rollback -> v19 data and metadata 19."""
    tenant = unique("s003")
    only_bg(session_fleet, tenant)
    plan_id = unique()
    submit(worker, r, plan_id, [two_stage_tenant(tenant)])
    wait_for(lambda: status_of(r, tenant) == "FAILED", timeout=30, what="forward FAILED")
    failed = task_of(r, tenant)
    assert failed["failedStage"] == "ob-service" and failed["failureCode"] == "STEP_FAILED"
    assert session_fleet.addresses["ob-service"][0] in failed["lastError"]
    assert r.hget(PREFIX + tenant, "metadata") == '{"version":20}'

    session_fleet.behave(tenant, Behaviour())
    assert control.execute(Command.ROLLBACK, {"tenantId": tenant}, reason="v20 broke")["ok"]
    wait_for(lambda: status_of(r, tenant) == "ROLLED_BACK", timeout=30, what="ROLLED_BACK")
    data = r.hgetall(PREFIX + tenant)
    assert data["metadata"] == '{"version":19}'
    bg = json.loads(data["icc-bg-gateway"])
    assert (bg["sourceUnitName"], bg["targetUnitName"]) == ("green", "blue")
    assert bg["routes"][0]["targetUri"] == "gw.blue.example"
    assert json.loads(data["ob-campaign"])["targetUnitName"] == "blue"
    rolled = task_of(r, tenant)
    ctx = json.loads(rolled["ctx"])
    assert rolled["runId"] != failed["runId"] and ctx["runKind"] == "ROLLBACK"
    assert ctx["additionalData"] == {"planVersion": 19}
    assert r.hget(f"deployer:plan:{plan_id}", "status") == "ROLLED_BACK"


def test_retry_from_checkpoint_skips_completed_stages(worker, r, control, session_fleet):
    tenant = unique("ckpt")
    only_bg(session_fleet, tenant)
    submit(worker, r, unique(), [two_stage_tenant(tenant)])
    wait_for(lambda: status_of(r, tenant) == "FAILED", timeout=30, what="FAILED at ob")
    assert task_of(r, tenant)["checkpoint"] == "0"
    session_fleet.behave(tenant, Behaviour())
    mark = len(events_of(r, tenant))
    assert control.execute(Command.RETRY, {"tenantId": tenant}, from_checkpoint=True)["ok"]
    wait_for(lambda: status_of(r, tenant) in ("COMPLETED", "FAILED"), timeout=30, what="ended")
    assert status_of(r, tenant) == "COMPLETED", task_of(r, tenant).get("lastError")
    started = [e["stage"] for e in events_of(r, tenant)[mark:] if e["type"] == "STAGE_STARTED"]
    assert started == ["ob-service"]


def test_retry_without_checkpoint_reruns_every_stage(worker, r, control, session_fleet):
    tenant = unique("full")
    only_bg(session_fleet, tenant)
    submit(worker, r, unique(), [two_stage_tenant(tenant)])
    wait_for(lambda: status_of(r, tenant) == "FAILED", timeout=30, what="FAILED at ob")
    session_fleet.behave(tenant, Behaviour())
    mark = len(events_of(r, tenant))
    assert control.execute(Command.RETRY, {"tenantId": tenant})["ok"]
    wait_for(lambda: status_of(r, tenant) in ("COMPLETED", "FAILED"), timeout=30, what="ended")
    assert status_of(r, tenant) == "COMPLETED", task_of(r, tenant).get("lastError")
    started = [e["stage"] for e in events_of(r, tenant)[mark:] if e["type"] == "STAGE_STARTED"]
    assert started == SERVICES


def test_pause_during_a_healthcheck_wait_then_resume(worker, r, control, session_fleet):
    tenant = unique("pause")
    session_fleet.behave(tenant, Behaviour(never=True))
    plan_id = unique()
    submit(worker, r, plan_id, [bg_tenant(tenant)])
    wait_for(
        lambda: "instances" in (task_of(r, tenant).get("progress") or ""),
        timeout=20,
        what="waiting in HealthCheck",
    )
    assert control.execute(Command.PAUSE, {"tenantId": tenant}, by="ops")["ok"]
    wait_for(lambda: status_of(r, tenant) == "PAUSED", timeout=20, what="PAUSED at a poll")
    assert not r.exists(f"deployer:lease:{tenant}")
    assert r.hget(f"deployer:plan:{plan_id}", "status") == "PAUSED"
    paused_ctx = json.loads(task_of(r, tenant)["ctx"])
    assert paused_ctx["stepIndex"] == 2  # the HealthCheck, after write and broadcast
    # The instances ignored the broadcast; from now on they re-read the hash on each poll.
    session_fleet.behave(tenant, Behaviour(lose_broadcast=True))
    assert control.execute(Command.RESUME, {"tenantId": tenant})["ok"]
    wait_for(lambda: status_of(r, tenant) in ("COMPLETED", "FAILED"), timeout=30, what="ended")
    assert status_of(r, tenant) == "COMPLETED", task_of(r, tenant).get("lastError")
    types = [e["type"] for e in events_of(r, tenant)]
    assert types.count("STAGE_STARTED") == 1  # resumed mid-stage, not from the start
    # The write and broadcast were not redone: one broadcast, seen once by each instance.
    assert session_fleet.broadcasts(tenant) == len(session_fleet.addresses["blue-green-gateway"])


def test_two_plans_for_one_tenant_never_run_at_once(worker, r, session_fleet):
    tenant = unique("lease")
    session_fleet.behave(tenant, Behaviour(delay=0.6))
    first, second = unique(), unique()
    submit(worker, r, first, [bg_tenant(tenant, version=20)])
    wait_for(lambda: status_of(r, tenant) == "RUNNING", what="first running")
    submit(worker, r, second, [bg_tenant(tenant, version=21)])
    wait_for(
        lambda: r.hget(f"deployer:plan:{second}", "status") == "COMPLETED",
        timeout=30,
        what="second plan COMPLETED",
    )
    assert r.hget(f"deployer:plan:{first}", "status") == "COMPLETED"
    events = [(e["planId"], e["type"]) for e in events_of(r, tenant)]
    first_done = events.index((first, "TASK_COMPLETED"))
    second_start = events.index((second, "TASK_RUNNING"))
    assert first_done < second_start
    assert r.hget(PREFIX + tenant, "metadata") == '{"version":21}'


def test_cancel_a_plan_mid_wait_leaves_nothing_running(worker, r, control, session_fleet):
    prefix = unique("cxl")
    session_fleet.behave(prefix, Behaviour(never=True))
    tenants = [f"{prefix}-{i}" for i in range(4)]
    plan_id = unique()
    submit(worker, r, plan_id, [bg_tenant(t) for t in tenants], maxConcurrency=2)
    wait_for(lambda: sum(status_of(r, t) == "RUNNING" for t in tenants) == 2, what="2 running")
    assert control.execute(Command.CANCEL, {"planId": plan_id}, by="ops", reason="stop")["ok"]
    wait_for(
        lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "CANCELLED",
        timeout=20,
        what="plan CANCELLED",
    )
    assert {status_of(r, t) for t in tenants} == {"CANCELLED"}
    assert not any(r.exists(f"deployer:lease:{t}") for t in tenants)
    assert r.hget(f"deployer:plan:{plan_id}", "inflight") == "0"


def test_resume_after_another_plan_ran_the_tenant_rewrites_the_stage(
    worker, r, control, session_fleet
):
    """Paused mid-HealthCheck; another plan deploys v30 meanwhile; on a forced resume the
    first run finds the tenant was taken by someone else, so it writes its stage again
    instead of waiting for a v20 that is no longer there. (Unforced, it ends SUPERSEDED:
    tests/integration/test_integrity.py.)"""
    tenant = unique("epoch")
    session_fleet.behave(tenant, Behaviour(never=True))
    first, second = unique(), unique()
    submit(worker, r, first, [bg_tenant(tenant, version=20)])
    wait_for(lambda: "instances" in (task_of(r, tenant).get("progress") or ""), what="waiting")
    assert control.execute(Command.PAUSE, {"tenantId": tenant})["ok"]
    wait_for(lambda: status_of(r, tenant) == "PAUSED", what="PAUSED")
    paused_task = r.get(f"deployer:tenant:{tenant}")

    session_fleet.behave(tenant, Behaviour())
    submit(worker, r, second, [bg_tenant(tenant, version=30)])
    wait_for(lambda: r.hget(f"deployer:plan:{second}", "status") == "COMPLETED", what="v30 done")
    assert r.hget(PREFIX + tenant, "metadata") == '{"version":30}'

    r.set(f"deployer:tenant:{tenant}", paused_task)  # address the paused task by tenant again
    assert control.execute(Command.RESUME, {"tenantId": tenant}, force=True)["ok"]
    wait_for(
        lambda: r.hget(f"deployer:plan:{first}", "status") in ("COMPLETED", "FAILED"),
        timeout=30,
        what="first plan ended",
    )
    assert r.hget(f"deployer:plan:{first}", "status") == "COMPLETED"
    assert r.hget(PREFIX + tenant, "metadata") == '{"version":20}'
    restarted = [
        e for e in events_of(r, tenant) if e["planId"] == first and e["type"] == "STAGE_STARTED"
    ]
    assert len(restarted) == 1  # the stage restarted its steps, it did not start a new stage
