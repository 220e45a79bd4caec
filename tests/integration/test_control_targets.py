"""Command targets and whole-plan commands against a real Redis and worker: one (plan,
tenant) task, resume order, a whole-plan cancel in slices, refusals that change nothing."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from deployer import audit
from deployer.cli import app
from deployer.client import target
from deployer.control import Target, TargetInvalid
from deployer.fleet import Behaviour
from deployer.lifecycle import Command
from deployer.models import task_id_for
from tests.helpers import bg_tenant, plan, unique, wait_for

PREFIX = "icc_ai_ops_srv:tenant_config:"
runner = CliRunner()


@pytest.fixture()
def control(worker):
    from tasks.runtime import controller

    return controller()


def task(r, plan_id: str, tenant: str) -> dict[str, str]:
    return r.hgetall(f"deployer:task:{task_id_for(plan_id, tenant)}")


def submit(worker, r, plan_id, tenants, **extra):
    worker.send_task("deployer.submit_plan", [plan(plan_id, tenants, **extra)])
    wait_for(lambda: r.exists(f"deployer:plan:{plan_id}"), what="plan stored")


def test_a_target_may_name_one_plan_tenant_task():
    assert Target.parse({"planId": "p1", "tenantId": "t1"}) == Target("p1", "t1")
    assert Target.parse('{"planId": 42, "tenantId": "t1"}') == Target("42", "t1")
    assert not Target("p1", "t1").is_plan and Target("p1").is_plan
    assert target("p1", "t1") == {"planId": "p1", "tenantId": "t1"}
    for bad in ({}, {"planId": "p", "other": 1}, {"tenantId": "t\n"}, [], "nope"):
        with pytest.raises(TargetInvalid):
            Target.parse(bad)


def test_plan_and_tenant_together_act_on_that_task_not_the_tenants_latest(
    worker, r, control, planted
):
    old, new, tenant = unique(), unique(), unique("t")
    submit(worker, r, old, [bg_tenant(tenant)])
    wait_for(lambda: task(r, old, tenant).get("status") == "COMPLETED", what="old COMPLETED")
    planted.not_a_hash(PREFIX + tenant)  # the newer plan's write fails
    submit(worker, r, new, [bg_tenant(tenant, version=21)])
    wait_for(lambda: task(r, new, tenant).get("status") == "FAILED", what="new FAILED")

    # the old plan's task is COMPLETED: cancelling it is refused, the newer task is untouched
    refused = control.execute(Command.CANCEL, {"planId": old, "tenantId": tenant}, by="ops")
    assert not refused["ok"] and refused["code"] == "TASK_ALREADY_FINISHED", refused
    assert task(r, new, tenant)["status"] == "FAILED"
    cli = runner.invoke(app, ["cancel", "--plan", new, "--tenant", tenant, "--reason", "x"])
    assert cli.exit_code == 0, cli.output
    assert task(r, new, tenant)["status"] == "CANCELLED"
    assert task(r, old, tenant)["status"] == "COMPLETED"
    missing = control.execute(Command.PAUSE, {"planId": old, "tenantId": unique("t")})
    assert missing["code"] == "TASK_NOT_FOUND"


def test_resume_of_a_plan_starts_tenants_paused_mid_flight_first(worker, r, control, session_fleet):
    plan_id = unique()
    first, second, third = (unique("t") for _ in range(3))
    session_fleet.behave(first, Behaviour(never=True))  # keeps polling: mid-flight
    submit(worker, r, plan_id, [bg_tenant(t) for t in (first, second, third)], maxConcurrency=1)
    wait_for(lambda: task(r, plan_id, first).get("status") == "RUNNING", what="first RUNNING")
    assert control.execute(Command.PAUSE, {"planId": plan_id})["ok"]
    wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "PAUSED", what="PAUSED")
    assert task(r, plan_id, first)["startedAt"] and not task(r, plan_id, second).get("startedAt")
    session_fleet.behave(first, Behaviour())

    # before: every resumed task went to the queue's front in submission order, so the
    # last never-started tenant ran first and the half-applied one last
    assert control.execute(Command.RESUME, {"planId": plan_id}, by="ops")["ok"]
    wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED", what="done")
    history = audit.history(r, plan_id=plan_id, count=1000).events
    completed = [f["tenantId"] for _, f in reversed(history) if f["type"] == "TASK_COMPLETED"]
    assert completed == [first, second, third]  # one slot: they ran in queue order


def test_cancel_of_a_plan_in_slices_cancels_every_task_and_frees_every_slot(r):
    """No worker: 2,500 tasks (three slices), a first wave holding slots, one task RUNNING."""
    from deployer.control import Controller
    from deployer.planner import Planner
    from deployer.settings import get_settings
    from deployer.state.store import Store, TaskRow

    store = Store(r, get_settings())
    plan_id = unique()
    rows = [TaskRow(f"t{i}", 1, json.dumps({"tenantId": f"t{i}"})) for i in range(2500)]
    store.create_plan(plan_id, rows, 50, "run-")
    slots = store.fill(plan_id)
    assert len(slots) == 50 and r.hget(f"deployer:plan:{plan_id}", "inflight") == "50"
    running = task_id_for(plan_id, "t0")
    r.hset(f"deployer:task:{running}", "status", "RUNNING")
    r.hincrby(f"deployer:plan:{plan_id}", "c:PENDING", -1)
    r.hincrby(f"deployer:plan:{plan_id}", "c:RUNNING", 1)
    sent: list[object] = []
    control = Controller(Planner(store, get_settings(), sent.extend))

    result = control.execute(Command.CANCEL, {"planId": plan_id}, by="ops", reason="abort")
    assert result["ok"] and result["counts"] == {"NOW": 2499, "REQUEST": 1}, result
    plan_hash = r.hgetall(f"deployer:plan:{plan_id}")
    assert plan_hash["c:CANCELLED"] == "2499" and plan_hash["c:PENDING"] == "0"
    assert plan_hash["inflight"] == "1"  # the running task keeps its slot until it stops
    assert plan_hash["control"] == "CANCEL" and plan_hash["status"] == "RUNNING"
    assert not r.exists(f"deployer:plan:{plan_id}:queue") and not sent
    assert r.hget(f"deployer:task:{running}", "control") == "CANCEL"
    last = r.hgetall(f"deployer:task:{task_id_for(plan_id, 't2499')}")
    assert last["status"] == "CANCELLED" and last["cancelledBy"] == "ops"
    again = control.execute(Command.CANCEL, {"planId": plan_id})
    assert again["ok"] and again["code"] == "ALREADY"


def test_a_command_every_task_refuses_sets_no_plan_flag(worker, r, control):
    plan_id, tenant = unique(), unique("t")
    submit(worker, r, plan_id, [bg_tenant(tenant)])
    wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED", what="done")
    for command in (Command.PAUSE, Command.CANCEL):
        result = control.execute(command, {"planId": plan_id}, by="ops")
        assert not result["ok"] and result["code"] in ("TASK_NOT_RUNNING", "TASK_ALREADY_FINISHED")
    # before: the plan was flagged PAUSE/CANCEL (a later status derivation read CANCELLED)
    assert r.hget(f"deployer:plan:{plan_id}", "control") is None
    assert r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED"


def test_resume_queues_mid_flight_tenants_first_each_group_in_submission_order(r):
    """No worker: four paused tasks, two of them paused mid-flight (started, or a stage
    checkpointed), one slot. The slot goes to the first mid-flight one, the queue keeps
    the other mid-flight one ahead of those never started."""
    from deployer.control import Controller
    from deployer.planner import Planner
    from deployer.settings import get_settings
    from deployer.state.store import Store, TaskRow

    store = Store(r, get_settings())
    plan_id = unique()
    tenants = ["n1", "m1", "n2", "m2"]
    rows = [TaskRow(t, 1, json.dumps(bg_tenant(t))) for t in tenants]
    store.create_plan(plan_id, rows, 1, "run-")
    r.delete(f"deployer:plan:{plan_id}:queue")
    r.hset(f"deployer:plan:{plan_id}", mapping={"c:PENDING": 0, "c:PAUSED": 4, "control": "PAUSE"})
    for t in tenants:
        r.hset(f"deployer:task:{task_id_for(plan_id, t)}", "status", "PAUSED")
    r.hset(f"deployer:task:{task_id_for(plan_id, 'm1')}", "startedAt", 1)
    r.hset(f"deployer:task:{task_id_for(plan_id, 'm2')}", "checkpoint", 0)
    sent: list[object] = []
    control = Controller(Planner(store, get_settings(), sent.extend))
    assert control.execute(Command.RESUME, {"planId": plan_id})["counts"] == {"NOW": 4}
    assert [d.task_id for d in sent] == [task_id_for(plan_id, "m1")]  # type: ignore[attr-defined]
    assert r.lrange(f"deployer:plan:{plan_id}:queue", 0, -1) == [
        task_id_for(plan_id, t) for t in ("m2", "n1", "n2")
    ]


def test_a_tenant_run_under_a_paused_or_cancelled_plan_is_refused_not_stranded(
    worker, r, control, session_fleet
):
    """Before: `resume --tenant` under a paused plan, or `rollback --tenant` of a cancelled
    plan's tenant, answered OK and left the task PENDING forever (no slot is filled while the
    plan flag is set). Now the command is refused with a code naming the plan-level way on."""
    plan_id, tenants = unique(), [unique("t"), unique("t")]
    session_fleet.behave(tenants[0], Behaviour(never=True))  # holds the plan's only slot
    submit(worker, r, plan_id, [bg_tenant(t) for t in tenants], maxConcurrency=1)
    wait_for(lambda: task(r, plan_id, tenants[0]).get("status") == "RUNNING", what="RUNNING")
    assert control.execute(Command.PAUSE, {"planId": plan_id}, by="ops")["ok"]
    # the second tenant never started (one slot): it is PAUSED at once
    wait_for(lambda: task(r, plan_id, tenants[1]).get("status") == "PAUSED", what="paused")
    refused = control.execute(Command.RESUME, {"tenantId": tenants[1]}, by="ops")
    assert not refused["ok"] and refused["code"] == "PLAN_PAUSED", refused
    assert task(r, plan_id, tenants[1])["status"] == "PAUSED"  # nothing queued

    assert control.execute(Command.CANCEL, {"planId": plan_id}, by="ops")["ok"]
    wait_for(lambda: task(r, plan_id, tenants[1]).get("status") == "CANCELLED", what="cancelled")
    refused = control.execute(Command.ROLLBACK, {"tenantId": tenants[1]}, by="ops")
    assert not refused["ok"] and refused["code"] == "PLAN_CANCELLED", refused
    assert "rollback --plan" in refused["message"]
    assert task(r, plan_id, tenants[1])["status"] == "CANCELLED"
    session_fleet.behave(tenants[0], Behaviour())


def test_resume_of_one_plan_tenant_task_as_the_readme_says(worker, r, session_fleet):
    """`resume --plan P --tenant T` resumes a task paused by itself; when plan P is paused
    as a whole it is refused PLAN_PAUSED (the task would wait for the plan), naming the way
    on. Before, the README's example named no such rule."""
    plan_id, tenant, other = unique(), unique("t"), unique("t")
    for t in (tenant, other):
        session_fleet.behave(t, Behaviour(never=True))  # both wait in their HealthCheck
    submit(worker, r, plan_id, [bg_tenant(tenant), bg_tenant(other)])
    for t in (tenant, other):
        wait_for(lambda t=t: task(r, plan_id, t).get("status") == "RUNNING", what="RUNNING")
    one = ["--plan", plan_id, "--tenant", tenant]

    assert runner.invoke(app, ["pause", *one]).exit_code == 0  # this task alone
    wait_for(lambda: task(r, plan_id, tenant).get("status") == "PAUSED", what="task PAUSED")
    resumed = runner.invoke(app, ["resume", *one])
    assert resumed.exit_code == 0, resumed.output
    assert task(r, plan_id, tenant)["status"] in ("PENDING", "RUNNING")

    assert runner.invoke(app, ["pause", "--plan", plan_id]).exit_code == 0  # the whole plan
    for t in (tenant, other):
        wait_for(lambda t=t: task(r, plan_id, t).get("status") == "PAUSED", what="PAUSED")
    refused = runner.invoke(app, ["resume", *one])
    assert refused.exit_code == 2
    assert "PLAN_PAUSED" in refused.output and f"resume --plan {plan_id}" in refused.output
    assert task(r, plan_id, tenant)["status"] == "PAUSED"
    assert runner.invoke(app, ["cancel", "--plan", plan_id]).exit_code == 0
    for t in (tenant, other):
        session_fleet.behave(t, Behaviour())
