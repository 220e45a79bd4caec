"""Failure budgets on real Redis and a real worker: exceeding one pauses the plan, or rolls
back exactly the tenants the plan started, newest first."""

from __future__ import annotations

import json

import pytest

from deployer.fleet import Behaviour
from deployer.lifecycle import Command
from tests.helpers import bg_tenant, plan, unique, wait_for

PREFIX = "icc_ai_ops_srv:tenant_config:"


@pytest.fixture()
def control(worker):
    from tasks.runtime import controller

    return controller()


def bad_tenant(tenant: str) -> dict:
    """Fails at its first stage (the portal refuses it); its previous config needs only the
    gateway, so its rollback succeeds."""
    cfg = bg_tenant(tenant, trunkGroup="tg-1", calledNumberRules="4001",
                    serviceNames=["blue-green-gateway", "portal"])  # fmt: skip
    cfg["sourceTenantDeployConfig"]["serviceNames"] = ["blue-green-gateway"]
    return cfg


def submit(worker, r, plan_id, tenants, **extra):
    worker.send_task("deployer.submit_plan", [plan(plan_id, tenants, **extra)])
    wait_for(lambda: r.exists(f"deployer:plan:{plan_id}"), what="plan stored")


def task_of(r, tenant):
    return r.hgetall(f"deployer:task:{r.get(f'deployer:tenant:{tenant}')}")


def plan_events(r, plan_id):
    return [f for _, f in r.xrange("deployer:events") if f.get("planId") == plan_id]


def view(plan_id):
    from deployer.state.plans import PlanRecord, Plans
    from deployer.waves import rollout_view
    from tasks.runtime import store

    return rollout_view(Plans.of(store()).get(plan_id) or PlanRecord())


def test_exceeding_the_budget_pauses_the_plan_and_resume_continues_the_wave(
    worker, r, control, session_fleet
):
    bad = unique("bp-bad")
    session_fleet.behave(bad, Behaviour(reject=True))
    ok = [unique("bp-ok") for _ in range(4)]
    # wave 0: ok0, bad-1, bad-2, ok1 (one at a time); wave 1: ok2, ok3
    tenants = [bg_tenant(ok[0]), bad_tenant(f"{bad}-1"), bad_tenant(f"{bad}-2"),
               bg_tenant(ok[1]), bg_tenant(ok[2]), bg_tenant(ok[3])]  # fmt: skip
    plan_id = unique("budget-pause")
    strategy = {"waves": {"type": "linear", "size": 4},
                "failureBudget": {"max": 1, "scope": "plan", "onExceed": "pause"}}  # fmt: skip
    submit(worker, r, plan_id, tenants, strategy=strategy, maxConcurrency=1)
    key = f"deployer:plan:{plan_id}"
    wait_for(lambda: r.hget(key, "status") == "PAUSED", timeout=30, what="plan auto-paused")

    assert task_of(r, ok[0])["status"] == "COMPLETED"
    assert task_of(r, f"{bad}-1")["status"] == task_of(r, f"{bad}-2")["status"] == "FAILED"
    for t in ok[1:]:  # not started: the rest of wave 0 and all of wave 1
        assert task_of(r, t)["status"] == "PENDING" and "startedAt" not in task_of(r, t)
    types = [e["type"] for e in plan_events(r, plan_id)]
    assert types.count("BUDGET_EXCEEDED") == 1 and types.count("PLAN_AUTO_PAUSED") == 1
    v = view(plan_id)
    assert v["budget"] == {"max": 1, "used": 2, "scope": "plan", "onExceed": "pause",
                           "exceeded": True, "exceededAt": v["budget"]["exceededAt"]}  # fmt: skip
    assert "failure budget exceeded" in v["stopReason"]
    # an auto-paused plan's current wave is not RUNNING
    assert [w["state"] for w in v["waves"]] == ["PAUSED", "PENDING"]

    # the operator resumes: wave 0 continues with ok1, then wave 1 runs
    assert control.execute(Command.RESUME, {"planId": plan_id}, by="ops")["ok"]
    wait_for(lambda: all(task_of(r, t)["status"] == "COMPLETED" for t in ok), timeout=60,
             what="the rest of the plan completed")  # fmt: skip
    assert [w["state"] for w in view(plan_id)["waves"]] == ["DONE", "DONE"]
    assert r.hget(key, "status") == "FAILED"  # two tenants did fail


def test_exceeding_the_budget_rolls_back_exactly_the_started_tenants_newest_first(
    worker, r, session_fleet
):
    bad = unique("br-bad")
    session_fleet.behave(bad, Behaviour(reject=True))
    ok = [unique("br-ok") for _ in range(2)]
    untouched = [unique("br-un") for _ in range(3)]
    names = [ok[0], ok[1], bad, *untouched]
    for t in names:  # what the services hold before the plan: version 19
        r.hset(PREFIX + t, mapping={"metadata": '{"version":19}', "marker": t})
    before = {t: r.hgetall(PREFIX + t) for t in untouched}
    tenants = [bg_tenant(ok[0]), bg_tenant(ok[1]), bad_tenant(bad)]
    tenants += [bg_tenant(t) for t in untouched]
    plan_id = unique("budget-rollback")
    strategy = {"waves": {"type": "linear", "size": 3},
                "failureBudget": {"max": 0, "scope": "wave", "onExceed": "rollback"}}  # fmt: skip
    submit(worker, r, plan_id, tenants, strategy=strategy, maxConcurrency=1)
    wait_for(lambda: all(task_of(r, t)["status"] == "ROLLED_BACK" for t in (*ok, bad)),
             timeout=60, what="started tenants rolled back")  # fmt: skip

    for t in (*ok, bad):
        assert r.hget(PREFIX + t, "metadata") == '{"version":19}'
        assert json.loads(r.hget(PREFIX + t, "icc-bg-gateway"))["targetUnitName"] == "blue"
    for t in untouched:  # never started: cancelled, their live config exactly as it was
        assert task_of(r, t)["status"] == "CANCELLED"
        assert "startedAt" not in task_of(r, t)
        assert r.hgetall(PREFIX + t) == before[t]
    events = plan_events(r, plan_id)
    rolling = [e["tenantId"] for e in events if e["type"] == "TASK_ROLLING_BACK"]
    assert rolling == [bad, ok[1], ok[0]]  # newest first
    types = [e["type"] for e in events]
    assert types.count("BUDGET_EXCEEDED") == 1 and types.count("PLAN_AUTO_ROLLBACK") == 1
    assert "WAVE_STARTED" in types and [e["wave"] for e in events if e["type"] ==
                                        "WAVE_STARTED"] == ["0"]  # fmt: skip
    key = f"deployer:plan:{plan_id}"
    wait_for(lambda: not r.hget(key, "pendingRollback")
             and r.zscore("deployer:plan-timers", plan_id) is None,
             what="the rollback marked done, no wave step left due")  # fmt: skip
    v = view(plan_id)
    assert [w["state"] for w in v["waves"]] == ["HALTED", "HALTED"]
    assert v["budget"]["scope"] == "wave" and "failure budget" in v["stopReason"]
