"""Pause, resume, cancel, retry and rollback against a real Redis and a real worker.

Failures are injected the way they happen in production: the tenant's config key holds
the wrong Redis type (the write fails with WRONGTYPE), or another run holds the tenant.
"""

from __future__ import annotations

import json

import pytest

from deployer.lifecycle import Command
from tests.helpers import bg_tenant, plan, unique, wait_for

PREFIX = "icc_ai_ops_srv:tenant_config:"


@pytest.fixture()
def control(worker):
    from tasks.runtime import controller

    return controller()


def task_of(r, tenant: str) -> dict[str, str]:
    return r.hgetall(f"deployer:task:{r.get(f'deployer:tenant:{tenant}')}")


def status_of(r, tenant: str) -> str | None:
    return task_of(r, tenant).get("status")


def plan_status(r, plan_id: str) -> str | None:
    return r.hget(f"deployer:plan:{plan_id}", "status")


def events_of(r, tenant: str) -> list[dict[str, str]]:
    return [f for _, f in r.xrange("deployer:events") if f.get("tenantId") == tenant]


def submit(worker, r, plan_id, tenants, **extra):
    worker.send_task("deployer.submit_plan", [plan(plan_id, tenants, **extra)])
    wait_for(lambda: r.exists(f"deployer:plan:{plan_id}"), what="plan stored")


def test_failed_write_fails_task_and_plan_with_reason_and_releases_tenant(worker, r, planted):
    plan_id, tenant = unique(), unique("t")
    planted.not_a_hash(PREFIX + tenant)
    submit(worker, r, plan_id, [bg_tenant(tenant)])
    wait_for(lambda: plan_status(r, plan_id) == "FAILED", what="plan FAILED")
    task = task_of(r, tenant)
    assert task["status"] == "FAILED"
    assert "blue-green-gateway" in task["lastError"] and "WRONGTYPE" in task["lastError"]
    assert task["failureCode"] == "STEP_FAILED"
    assert not r.exists(f"deployer:lease:{tenant}")
    assert r.zscore("deployer:inflight", task["taskId"]) is None


def test_retry_after_fix_completes_and_counts(worker, r, control, planted):
    plan_id, tenant = unique(), unique("t")
    planted.not_a_hash(PREFIX + tenant)
    submit(worker, r, plan_id, [bg_tenant(tenant)])
    wait_for(lambda: status_of(r, tenant) == "FAILED", what="FAILED")
    r.delete(PREFIX + tenant)
    result = control.execute(Command.RETRY, {"tenantId": tenant}, by="ops", reason="fixed")
    assert result["ok"] and result["code"] == "OK"
    wait_for(lambda: plan_status(r, plan_id) == "COMPLETED", what="plan COMPLETED")
    task = task_of(r, tenant)
    assert task["retryCount"] == "1" and not task.get("lastError")
    assert not task.get("failureCode")
    assert json.loads(r.hget(PREFIX + tenant, "metadata")) == {"version": 20}
    retry_events = [e for e in events_of(r, tenant) if e["type"] == "TASK_RETRY"]
    assert retry_events and retry_events[0]["by"] == "ops"


def test_retry_limit_is_enforced(worker, r, control, planted):
    plan_id, tenant = unique(), unique("t")
    planted.not_a_hash(PREFIX + tenant)
    submit(worker, r, plan_id, [bg_tenant(tenant)])
    for attempt in range(3):
        wait_for(lambda: status_of(r, tenant) == "FAILED", what=f"FAILED #{attempt}")
        assert control.execute(Command.RETRY, {"tenantId": tenant})["ok"]
        wait_for(lambda: status_of(r, tenant) != "PENDING", what="retry started")
    wait_for(lambda: status_of(r, tenant) == "FAILED", what="FAILED at the limit")
    result = control.execute(Command.RETRY, {"tenantId": tenant})
    assert not result["ok"] and result["code"] == "RETRY_LIMIT_REACHED"


def test_rollback_writes_previous_snapshot_with_fresh_context(worker, r, control):
    """Forward v20 (prev v19) then rollback: v19 data, metadata 19, a new run.

    The rollback row of docs/contracts.md §4.
    """
    plan_id, tenant = unique(), unique("t")
    submit(worker, r, plan_id, [bg_tenant(tenant, version=20, prev_version=19)])
    wait_for(lambda: status_of(r, tenant) == "COMPLETED", what="forward COMPLETED")
    forward = task_of(r, tenant)
    result = control.execute(Command.ROLLBACK, {"tenantId": tenant}, reason="bad release")
    assert result["ok"], result
    wait_for(lambda: status_of(r, tenant) == "ROLLED_BACK", what="ROLLED_BACK")
    data = r.hgetall(PREFIX + tenant)
    assert data["metadata"] == '{"version":19}'
    assert json.loads(data["icc-bg-gateway"]) == {
        "tenantId": tenant,
        "sourceUnitName": "green",
        "targetUnitName": "blue",
        "routes": [{"id": "r1", "sourceUri": "10.0.0.1", "targetUri": "gw.blue.example"}],
    }
    task = task_of(r, tenant)
    ctx = json.loads(task["ctx"])
    assert task["runKind"] == "ROLLBACK" and task["runId"] != forward["runId"]
    assert ctx["runKind"] == "ROLLBACK" and ctx["additionalData"] == {"planVersion": 19}
    assert ctx["runId"] == task["runId"]
    assert plan_status(r, plan_id) == "ROLLED_BACK"
    types = [e["type"] for e in events_of(r, tenant)]
    assert (
        types.index("TASK_ROLLBACK")
        < types.index("TASK_ROLLING_BACK")
        < types.index("TASK_ROLLED_BACK")
    )


def test_rollback_without_snapshot_is_refused(worker, r, control):
    plan_id, tenant = unique(), unique("t")
    submit(worker, r, plan_id, [bg_tenant(tenant, prev_version=None)])
    wait_for(lambda: status_of(r, tenant) == "COMPLETED", what="COMPLETED")
    result = control.execute(Command.ROLLBACK, {"tenantId": tenant})
    assert not result["ok"] and result["code"] == "NO_PREVIOUS_CONFIG"
    assert status_of(r, tenant) == "COMPLETED"


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (Command.PAUSE, "TASK_NOT_RUNNING"),
        (Command.RESUME, "TASK_NOT_PAUSED"),
        (Command.CANCEL, "TASK_ALREADY_FINISHED"),
        (Command.RETRY, "TASK_NOT_FAILED"),
    ],
)
def test_commands_on_a_completed_task_are_refused_with_codes(worker, r, control, command, code):
    plan_id, tenant = unique(), unique("t")
    submit(worker, r, plan_id, [bg_tenant(tenant)])
    wait_for(lambda: status_of(r, tenant) == "COMPLETED", what="COMPLETED")
    result = control.execute(command, {"tenantId": tenant})
    assert result == {**result, "ok": False, "code": code}
    assert status_of(r, tenant) == "COMPLETED"


def test_a_busy_tenant_waits_for_the_lease_then_runs(worker, r, planted):
    plan_id, tenant = unique(), unique("t")
    planted.lease(tenant)
    submit(worker, r, plan_id, [bg_tenant(tenant)])
    wait_for(
        lambda: task_of(r, tenant).get("progress") == "waiting for the tenant lease",
        what="waiting on the lease",
    )
    assert status_of(r, tenant) == "PENDING"
    assert not r.exists(PREFIX + tenant)
    r.delete(f"deployer:lease:{tenant}")
    wait_for(lambda: status_of(r, tenant) == "COMPLETED", what="COMPLETED after release")


def test_pause_and_resume_a_plan(worker, r, control, planted):
    plan_id = unique()
    tenants = [unique("t") for _ in range(3)]
    planted.lease(tenants[0])
    submit(worker, r, plan_id, [bg_tenant(t) for t in tenants], maxConcurrency=1)
    wait_for(
        lambda: task_of(r, tenants[0]).get("progress") == "waiting for the tenant lease",
        what="first tenant waiting",
    )
    result = control.execute(Command.PAUSE, {"planId": plan_id}, by="ops")
    assert result["ok"], result
    wait_for(lambda: plan_status(r, plan_id) == "PAUSED", what="plan PAUSED")
    assert {status_of(r, t) for t in tenants} == {"PAUSED"}
    again = control.execute(Command.PAUSE, {"planId": plan_id})
    assert again["ok"] and again["code"] == "ALREADY"
    r.delete(f"deployer:lease:{tenants[0]}")
    assert control.execute(Command.RESUME, {"planId": plan_id})["ok"]
    wait_for(lambda: plan_status(r, plan_id) == "COMPLETED", what="plan COMPLETED")
    for t in tenants:
        assert r.hget(PREFIX + t, "metadata") == '{"version":20}'


def test_cancel_a_plan_leaves_nothing_running_and_no_lease(worker, r, control, planted):
    plan_id = unique()
    tenants = [unique("t") for _ in range(4)]
    planted.lease(tenants[0])
    submit(worker, r, plan_id, [bg_tenant(t) for t in tenants], maxConcurrency=1)
    wait_for(
        lambda: task_of(r, tenants[0]).get("progress") == "waiting for the tenant lease",
        what="first tenant waiting",
    )
    worker.send_task(
        "deployer.cancel", [{"planId": plan_id}], kwargs={"by": "ops", "reason": "abort"}
    )
    wait_for(lambda: plan_status(r, plan_id) == "CANCELLED", what="plan CANCELLED")
    assert {status_of(r, t) for t in tenants} == {"CANCELLED"}
    assert r.get(f"deployer:lease:{tenants[0]}") == "another-run"  # not ours: untouched
    assert not any(r.exists(f"deployer:lease:{t}") for t in tenants[1:])
    assert r.hget(f"deployer:plan:{plan_id}", "inflight") == "0"
    assert task_of(r, tenants[1])["cancelledBy"] == "ops"


def test_submitting_the_same_plan_twice_gives_one_plan(worker, r):
    from tasks.runtime import planner

    plan_id, tenant = unique(), unique("t")
    first = planner().submit(plan(plan_id, [bg_tenant(tenant)]))
    second = planner().submit(plan(plan_id, [bg_tenant(tenant)]))
    assert first["code"] == "ACCEPTED" and second["code"] == "ALREADY_SUBMITTED"
    wait_for(lambda: plan_status(r, plan_id) == "COMPLETED", what="COMPLETED")
    assert r.llen(f"deployer:plan:{plan_id}:tenants") == 1
    assert [e["type"] for e in events_of(r, tenant)].count("TASK_COMPLETED") == 1


def test_plan_rollback_covers_tasks_that_changed_something(worker, r, control, planted):
    plan_id = unique()
    done, never = unique("t"), unique("t")
    planted.lease(never)
    submit(worker, r, plan_id, [bg_tenant(done), bg_tenant(never)])
    wait_for(lambda: status_of(r, done) == "COMPLETED", what="first COMPLETED")
    wait_for(
        lambda: task_of(r, never).get("progress") == "waiting for the tenant lease",
        what="second waiting",
    )
    assert control.execute(Command.CANCEL, {"tenantId": never})["ok"]
    result = control.execute(Command.ROLLBACK, {"planId": plan_id})
    assert result["ok"] and result["counts"] == {"NOW": 1}
    assert result["skipped"] == [
        {"tenantId": never, "code": "TASK_NEVER_STARTED", "message": "nothing to roll back"}
    ]
    wait_for(lambda: status_of(r, done) == "ROLLED_BACK", what="ROLLED_BACK")
    assert status_of(r, never) == "CANCELLED"


def test_a_run_that_lost_its_lease_mid_stage_does_not_complete(worker, r, planted):
    """The lease expired during a slow stage and another run took the tenant: the first run's
    stage end is refused, so two runs of one tenant never both count as done at once."""
    from deployer.context import TaskRuntimeContext
    from deployer.models import StageSpec
    from tasks.runtime import store

    plan_id, tenant = unique(), unique("t")
    planted.lease(tenant)  # hold the tenant: no start
    submit(worker, r, plan_id, [bg_tenant(tenant)])
    wait_for(
        lambda: task_of(r, tenant).get("progress") == "waiting for the tenant lease", what="waiting"
    )
    task = task_of(r, tenant)
    ctx = TaskRuntimeContext.from_json(task["ctx"]).with_token(task["token"]).next_stage()
    # as if its stage had just run
    stage = StageSpec(name="blue-green-gateway", service="blue-green-gateway", steps=[])
    r.hset(f"deployer:task:{task['taskId']}", "status", "RUNNING")  # it had started
    assert store().end_stage(ctx, stage, is_last=True)[0] == "STALE"
    assert task_of(r, tenant)["checkpoint"] == "-1"
    r.hset(f"deployer:task:{task['taskId']}", "status", "PENDING")
    r.delete(f"deployer:lease:{tenant}")
    wait_for(lambda: status_of(r, tenant) == "COMPLETED", what="runs once the tenant is free")
