"""Integrity on real Redis and a real worker: task ids never collide across plans, one bad
task never stops the others, and an older run never re-applies its config over a newer one."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from deployer.cli import app as cli
from deployer.fleet import Behaviour
from deployer.lifecycle import Command
from deployer.models import task_id_for
from tests.helpers import bg_tenant, plan, unique, wait_for

PREFIX = "icc_ai_ops_srv:tenant_config:"


@pytest.fixture()
def control(worker):
    from tasks.runtime import controller

    return controller()


def plan_status(r, plan_id):
    return r.hget(f"deployer:plan:{plan_id}", "status")


def submit(worker, r, plan_id, tenants, **extra):
    worker.send_task("deployer.submit_plan", [plan(plan_id, tenants, **extra)])
    wait_for(lambda: r.exists(f"deployer:plan:{plan_id}"), what=f"plan {plan_id} stored")


def test_plan_a_tenant_b_c_and_plan_a_b_tenant_c_are_two_tasks_that_both_complete(worker, r):
    """Before: both were `task-a_b_c`; the second plan overwrote the first's task, both
    plans stayed RUNNING with negative counters."""
    first, c = unique("col"), unique("c")
    second, t_first, t_second = f"{first}_b", f"b_{c}", c  # plan a tenant b_c, plan a_b tenant c
    assert task_id_for(first, t_first) != task_id_for(second, t_second)
    submit(worker, r, first, [bg_tenant(t_first)])
    submit(worker, r, second, [bg_tenant(t_second)])
    for plan_id in (first, second):
        wait_for(
            lambda plan_id=plan_id: plan_status(r, plan_id) == "COMPLETED",
            timeout=30,
            what=f"plan {plan_id} COMPLETED",
        )
        counters = {k: v for k, v in r.hgetall(f"deployer:plan:{plan_id}").items() if k[:2] == "c:"}
        assert counters == {"c:PENDING": "0", "c:RUNNING": "0", "c:COMPLETED": "1"}, counters
    task = r.hgetall(f"deployer:task:{task_id_for(first, t_first)}")
    assert (task["planId"], task["tenantId"], task["status"]) == (first, t_first, "COMPLETED")
    task = r.hgetall(f"deployer:task:{task_id_for(second, t_second)}")
    assert (task["planId"], task["tenantId"], task["status"]) == (second, t_second, "COMPLETED")


def test_a_task_whose_record_is_corrupt_fails_alone_and_the_sweep_redrives_the_others(redis_url):
    """Before: a stored context past its run's last stage made `build_chain` raise
    ValueError inside the sweep, on every sweep, and no other claimed task was sent."""
    import redis as redis_lib

    from deployer.planner import Planner
    from deployer.redis_client import client_for
    from deployer.redrive import Reconciler
    from deployer.settings import Settings
    from deployer.state.store import Dispatch, Store, now_ms
    from tasks.chains import build_chain

    url = redis_url.rsplit("/", 1)[0] + "/8"  # a database of its own: claims ten minutes on
    redis_lib.Redis.from_url(url).flushdb()
    r8 = redis_lib.Redis.from_url(url, decode_responses=True)
    settings = Settings(redis_url=url, lease_ttl_seconds=5)
    chains: list[tuple[str, int]] = []

    def send(dispatches: list[Dispatch]) -> None:  # real chains, never published
        for d in dispatches:
            chains.append((d.task_id, len(build_chain(d.run.stages, d.context).tasks)))

    planner = Planner(Store(client_for(settings.state_url), settings), settings, send)
    plan_id = unique()
    tenants = [f"{plan_id}-t{i}" for i in range(3)]
    assert planner.submit(plan(plan_id, [bg_tenant(t) for t in tenants]))["ok"]
    bad = task_id_for(plan_id, tenants[1])
    ctx = r8.hget(f"deployer:task:{bad}", "ctx")
    r8.hset(f"deployer:task:{bad}", "ctx", ctx.replace('"stageIndex":0', '"stageIndex":7'))
    chains.clear()

    refilled: list[str] = []
    reconciler = Reconciler(planner.store, planner.launch, lambda p: refilled.append(p))
    result = reconciler.sweep(now_ms() + 10 * 60 * 1000)
    assert len(result.redriven) == 3
    good = [t for t in tenants if t != tenants[1]]
    assert sorted(chains) == sorted((task_id_for(plan_id, t), 1) for t in good)
    task = r8.hgetall(f"deployer:task:{bad}")
    assert task["status"] == "FAILED" and "stage 7" in task["lastError"], task.get("lastError")
    counters = r8.hgetall(f"deployer:plan:{plan_id}")
    assert counters["c:FAILED"] == "1" and counters["inflight"] == "2"
    assert min(int(v) for k, v in counters.items() if k.startswith("c:")) >= 0


def task_of(r, plan_id, tenant):
    return r.hgetall(f"deployer:task:{task_id_for(plan_id, tenant)}")


def version_of(r, tenant):
    return r.hget(PREFIX + tenant, "metadata")


def pause_old_plan_mid_flight_then_deploy_a_newer_one(worker, r, control, fleet, tenant):
    """oldP (v60) waits in its HealthCheck and is paused; newP (v61) deploys the tenant."""
    old, new = unique("oldP"), unique("newP")
    fleet.behave(tenant, Behaviour(never=True))
    submit(worker, r, old, [bg_tenant(tenant, version=60)])
    wait_for(
        lambda: "instances" in (task_of(r, old, tenant).get("progress") or ""),
        what="oldP waiting in its HealthCheck",
    )
    assert control.execute(Command.PAUSE, {"planId": old}, by="ops")["ok"]
    wait_for(lambda: task_of(r, old, tenant).get("status") == "PAUSED", what="oldP PAUSED")
    fleet.behave(tenant, Behaviour())
    submit(worker, r, new, [bg_tenant(tenant, version=61)])
    wait_for(lambda: plan_status(r, new) == "COMPLETED", timeout=30, what="newP COMPLETED")
    assert version_of(r, tenant) == '{"version":61}'
    return old, new


def test_resuming_an_older_plan_after_a_newer_deployed_the_tenant_ends_superseded(
    worker, r, control, session_fleet
):
    """Before: `resume --plan oldP` rewrote the hash to v60, silently."""
    tenant = unique("px")
    old, new = pause_old_plan_mid_flight_then_deploy_a_newer_one(
        worker, r, control, session_fleet, tenant
    )
    assert control.execute(Command.RESUME, {"planId": old}, by="ops")["ok"]
    wait_for(lambda: plan_status(r, old) != "RUNNING", timeout=30, what="oldP finished")

    task = task_of(r, old, tenant)
    assert task["status"] == "SUPERSEDED", task
    assert task["supersededBy"] == task_id_for(new, tenant)
    assert version_of(r, tenant) == '{"version":61}'  # the newer config stays
    assert plan_status(r, old) == "COMPLETED"  # finished, not stranded RUNNING
    assert r.hget(f"deployer:plan:{old}", "inflight") == "0"
    assert not r.exists(f"deployer:lease:{tenant}")
    assert r.zscore("deployer:inflight", task_id_for(old, tenant)) is None
    events = [f for _, f in r.xrange("deployer:events") if f.get("taskId") == task["taskId"]]
    superseded = [e for e in events if e["type"] == "TASK_SUPERSEDED"]
    assert len(superseded) == 1 and superseded[0]["supersededBy"] == task_id_for(new, tenant)
    # `deployer task --tenant` shows the tenant's newest task, not oldP's, and v61.
    assert r.get(f"deployer:tenant:{tenant}") == task_id_for(new, tenant)
    shown = CliRunner().invoke(cli, ["task", "--tenant", tenant, "--json"], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    shown_task = json.loads(shown.output)
    assert (shown_task["planId"], shown_task["status"]) == (new, "COMPLETED")
    assert shown_task["hash"]["metadata"] == '{"version":61}'
    assert "token" not in shown_task["context"]
    assert r.get(f"deployer:applied:{tenant}").endswith("|" + task_id_for(new, tenant))

    # It never applied: nothing to roll back; a retry only when forced.
    for command in (Command.RETRY, Command.ROLLBACK):
        answer = control.execute(command, {"planId": old}, by="ops")
        assert not answer["ok"] and answer["code"] == "TASK_SUPERSEDED", answer
    assert task_of(r, old, tenant)["status"] == "SUPERSEDED"


def test_a_forced_resume_applies_the_older_config_and_says_so(worker, r, control, session_fleet):
    tenant = unique("pxf")
    old, _new = pause_old_plan_mid_flight_then_deploy_a_newer_one(
        worker, r, control, session_fleet, tenant
    )
    argv = ["resume", "--plan", old, "--by", "ops", "--reason", "re-apply v60", "--force"]
    answer = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert answer.exit_code == 0, answer.output
    wait_for(lambda: plan_status(r, old) == "COMPLETED", timeout=30, what="oldP COMPLETED")
    assert task_of(r, old, tenant)["status"] == "COMPLETED"
    assert version_of(r, tenant) == '{"version":60}'  # what the operator asked for
    resumed = [
        f
        for _, f in r.xrange("deployer:events")
        if f.get("taskId") == task_id_for(old, tenant) and f["type"] == "TASK_RESUMED"
    ]
    assert resumed[-1]["by"] == "ops" and resumed[-1]["reason"] == "forced: re-apply v60"


def test_a_superseded_task_is_retried_only_with_force(worker, r, control, session_fleet):
    tenant = unique("pxr")
    old, _new = pause_old_plan_mid_flight_then_deploy_a_newer_one(
        worker, r, control, session_fleet, tenant
    )
    assert control.execute(Command.RESUME, {"planId": old})["ok"]
    wait_for(lambda: task_of(r, old, tenant).get("status") == "SUPERSEDED", what="SUPERSEDED")
    refused = CliRunner().invoke(cli, ["retry", "--plan", old], catch_exceptions=False)
    assert refused.exit_code == 2 and "TASK_SUPERSEDED" in refused.output
    # By task name, as any Celery client sends it: kwarg force.
    worker.send_task("deployer.retry", [{"planId": old}], {"force": True, "by": "ops"})
    wait_for(
        lambda: task_of(r, old, tenant)["status"] in ("COMPLETED", "FAILED"),
        timeout=30,
        what="forced retry ended",
    )
    assert task_of(r, old, tenant)["status"] == "COMPLETED"
    assert plan_status(r, old) == "COMPLETED"
    assert version_of(r, tenant) == '{"version":60}'


def test_a_redelivered_stage_message_of_the_older_run_changes_nothing(
    worker, r, control, session_fleet
):
    """The paused run's own stage message comes back (a redelivery): fenced off, v61 stays."""
    tenant = unique("pxs")
    old, new = pause_old_plan_mid_flight_then_deploy_a_newer_one(
        worker, r, control, session_fleet, tenant
    )
    paused = task_of(r, old, tenant)
    ctx = json.loads(paused["ctx"])
    ctx["stepIndex"], ctx["attempt"] = 0, 0  # from the stage's first step: its write
    spec = json.loads(paused["run"])["stages"][0]
    mark = r.xinfo_stream("deployer:events")["last-generated-id"]
    worker.send_task("deployer.run_stage", [ctx, spec], queue="deployer.stages")
    assert control.execute(Command.RESUME, {"planId": old})["ok"]
    wait_for(lambda: task_of(r, old, tenant).get("status") == "SUPERSEDED", what="SUPERSEDED")
    assert version_of(r, tenant) == '{"version":61}'
    later = [f for _, f in r.xrange("deployer:events", min=f"({mark}")]
    assert not [e for e in later if e["type"] == "STAGE_STARTED" and e["planId"] == old]
    assert task_of(r, new, tenant)["status"] == "COMPLETED"


def test_every_stage_script_refuses_a_message_whose_plan_or_tenant_is_not_its_task(
    worker, r, session_fleet
):
    """Start, end (which finishes a task and moves plan counters) and fail: each checks the
    message's ids against the stored task and touches nothing when they differ."""
    from deployer.context import TaskRuntimeContext
    from deployer.models import StageSpec
    from tasks.runtime import store

    victim, victim_plan = unique("victim"), unique()
    submit(worker, r, victim_plan, [bg_tenant(victim)])
    wait_for(lambda: plan_status(r, victim_plan) == "COMPLETED", timeout=30, what="victim done")
    own, own_plan = unique("own"), unique()
    session_fleet.behave(own, Behaviour(never=True))
    submit(worker, r, own_plan, [bg_tenant(own)])
    key = f"deployer:task:{task_id_for(own_plan, own)}"
    wait_for(lambda: "instances" in (r.hget(key, "progress") or ""), what="own task waiting")
    live = TaskRuntimeContext.from_json(r.hget(key, "ctx")).with_token(r.hget(key, "token"))
    stage = StageSpec.model_validate(json.loads(r.hget(key, "run"))["stages"][0])

    def state() -> list[dict[str, str]]:
        # (The own task keeps polling meanwhile: its cursor and poll metrics may move.)
        own_plan_counters = {
            k: v
            for k, v in r.hgetall(f"deployer:plan:{own_plan}").items()
            if k.startswith("c:") or k in ("status", "inflight")
        }
        fields = ("status", "token", "planId", "tenantId", "checkpoint", "lastError", "endedAt")
        return [
            r.hgetall(f"deployer:plan:{victim_plan}"),
            own_plan_counters,
            r.hgetall(PREFIX + victim),
            dict(zip(fields, r.hmget(key, fields), strict=True)),
        ]

    before = state()
    for forged in (
        live.model_copy(update={"tenant_id": victim}),
        live.model_copy(update={"plan_id": victim_plan}),
    ):
        assert store().begin_stage(forged, stage).verdict == "FORGED"
        done = forged.model_copy(update={"stage_index": 1})
        assert store().end_stage(done, stage, is_last=True)[0] == "FORGED"
        assert store().fail(forged, stage.name, "forged failure") == "FORGED"
    assert state() == before
    assert not r.exists(f"deployer:lease:{victim}")
    session_fleet.behave(own, Behaviour())
    wait_for(lambda: plan_status(r, own_plan) == "COMPLETED", timeout=30, what="own plan done")


def test_retrying_an_older_failed_task_after_a_newer_deployed_the_tenant_ends_superseded(
    worker, r, control, session_fleet
):
    tenant = unique("pxq")
    old, new = unique("oldP"), unique("newP")
    session_fleet.behave(tenant, Behaviour(never=True))
    submit(worker, r, old, [bg_tenant(tenant, version=60)])
    wait_for(lambda: plan_status(r, old) == "FAILED", timeout=30, what="oldP FAILED")
    session_fleet.behave(tenant, Behaviour())
    submit(worker, r, new, [bg_tenant(tenant, version=61)])
    wait_for(lambda: plan_status(r, new) == "COMPLETED", timeout=30, what="newP COMPLETED")

    assert control.execute(Command.RETRY, {"planId": old}, by="ops")["ok"]
    wait_for(
        lambda: task_of(r, old, tenant).get("status") == "SUPERSEDED",
        timeout=30,
        what="the retry SUPERSEDED",
    )
    assert version_of(r, tenant) == '{"version":61}'
    assert plan_status(r, old) == "COMPLETED"
    # A rollback of the newer task is still the way back, and is not superseded by itself.
    assert control.execute(Command.ROLLBACK, {"planId": new}, by="ops")["ok"]
    wait_for(lambda: plan_status(r, new) == "ROLLED_BACK", timeout=30, what="newP rolled back")
    assert version_of(r, tenant) == '{"version":19}'
