"""Progressive rollout on real Redis and a real worker: waves in order, canary first, bakes
that hold no worker, approvals, the approve task."""

from __future__ import annotations

import time

import pytest

from deployer.lifecycle import Command
from tests.helpers import bg_tenant, plan, unique, wait_for

PREFIX = "icc_ai_ops_srv:tenant_config:"


@pytest.fixture()
def control(worker):
    from tasks.runtime import controller

    return controller()


def submit(worker, r, plan_id, tenants, **extra):
    worker.send_task("deployer.submit_plan", [plan(plan_id, tenants, **extra)])
    wait_for(lambda: r.exists(f"deployer:plan:{plan_id}"), what="plan stored")


def plan_events(r, plan_id):
    return [(i, f) for i, f in r.xrange("deployer:events") if f.get("planId") == plan_id]


def status(r, plan_id):
    return r.hget(f"deployer:plan:{plan_id}", "status")


def finished(r, plan_id):
    return status(r, plan_id) in ("COMPLETED", "FAILED", "CANCELLED", "ROLLED_BACK")


def wave_of_task(r, task_id):
    return int(r.hget(f"deployer:task:{task_id}", "wave"))


def summary(plan_id):
    from deployer.waves import wave_summary
    from tasks.runtime import store

    return wave_summary(store(), plan_id)


def test_waves_start_in_order_never_overlap_and_the_canary_runs_alone_first(worker, r):
    plan_id = unique("waves")
    tenants = [unique("wv") for _ in range(7)]
    canary = tenants[4]
    strategy = {"canary": [canary], "waves": {"type": "exponential", "size": 1, "factor": 2}}
    submit(worker, r, plan_id, [bg_tenant(t) for t in tenants], strategy=strategy)
    wait_for(lambda: status(r, plan_id) == "COMPLETED", timeout=60, what="plan COMPLETED")

    events = plan_events(r, plan_id)
    first_start: dict[int, int] = {}
    last_end: dict[int, int] = {}
    members: dict[int, set[str]] = {}
    for n, (_, e) in enumerate(events):
        if e["type"] == "TASK_RUNNING":
            w = wave_of_task(r, e["taskId"])
            first_start.setdefault(w, n)
            members.setdefault(w, set()).add(e["tenantId"])
        if e["type"] == "TASK_COMPLETED":
            last_end[wave_of_task(r, e["taskId"])] = n
    assert members == {0: {canary}, 1: {tenants[0]}, 2: {tenants[1], tenants[2]},
                       3: {tenants[3], tenants[5], tenants[6]}}  # fmt: skip
    for w in range(3):
        assert last_end[w] < first_start[w + 1], f"wave {w + 1} started before wave {w} ended"
    started = [e for _, e in events if e["type"] == "WAVE_STARTED"]
    assert [e["wave"] for e in started] == ["0", "1", "2", "3"]
    assert [w["state"] for w in summary(plan_id)] == ["DONE"] * 4
    assert [(w["tenants"], w["done"], w["failed"]) for w in summary(plan_id)] == [
        (1, 1, 0), (1, 1, 0), (2, 2, 0), (3, 3, 0)
    ]  # fmt: skip
    for t in tenants:
        assert r.hget(PREFIX + t, "metadata") == '{"version":20}'


def test_a_bake_holds_the_next_wave_with_no_worker_busy(worker, r):
    plan_id = unique("bake")
    tenants = [unique("bk") for _ in range(3)]
    strategy = {"canary": 1, "bakeSeconds": 4}
    submit(worker, r, plan_id, [bg_tenant(t) for t in tenants], strategy=strategy)
    wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "waveState") == "BAKING", timeout=30,
             what="wave 0 baking")  # fmt: skip
    waves = summary(plan_id)
    assert waves[0]["state"] == "BAKING" and waves[0]["done"] == 1 and "bakeUntil" in waves[0]
    assert waves[1]["state"] == "PENDING"
    # nothing runs while the plan bakes: wave 1 not even sent, no stage in any worker
    for t in tenants[1:]:
        task = r.hgetall(f"deployer:task:{r.get(f'deployer:tenant:{t}')}")
        assert task["status"] == "PENDING" and "dispatchedAt" not in task
    active = worker.control.inspect(timeout=1).active() or {}
    assert all(not tasks for tasks in active.values()), active
    assert r.hget(f"deployer:plan:{plan_id}", "waveState") == "BAKING"  # asked within it
    wait_for(lambda: status(r, plan_id) == "COMPLETED", timeout=60, what="plan COMPLETED")
    events = {e["type"]: e for _, e in plan_events(r, plan_id) if e.get("wave") == "0"}
    baking = events["WAVE_BAKING"]
    started1 = [e for _, e in plan_events(r, plan_id)
                if e["type"] == "WAVE_STARTED" and e["wave"] == "1"][0]  # fmt: skip
    assert int(started1["ts"]) >= int(baking["until"]) >= int(baking["ts"]) + 4000
    # the last wave bakes too (failures then still count), then the waves are DONE
    wait_for(lambda: [w["state"] for w in summary(plan_id)] == ["DONE", "DONE"], timeout=20,
             what="final bake over")  # fmt: skip


def test_an_unapproved_wave_never_starts_and_approval_starts_it(worker, r, control):
    plan_id = unique("appr")
    tenants = [unique("ap") for _ in range(3)]
    strategy = {"canary": 1, "approval": "first", "bakeSeconds": 1}
    submit(worker, r, plan_id, [bg_tenant(t) for t in tenants], strategy=strategy)
    key = f"deployer:plan:{plan_id}"
    wait_for(lambda: r.hget(key, "waveState") == "AWAITING_APPROVAL", timeout=30,
             what="wave 1 awaiting approval")  # fmt: skip
    waiting_since = time.monotonic()
    refused = control.execute(Command.APPROVE, {"tenantId": tenants[0]})
    assert (refused["ok"], refused["code"]) == (False, "TARGET_INVALID")
    # well past its bake and several reconciler ticks: still nothing sent
    wait_for(lambda: time.monotonic() - waiting_since > 4, timeout=10, what="4 s to pass")
    assert r.hget(key, "waveState") == "AWAITING_APPROVAL"
    for t in tenants[1:]:
        task = r.hgetall(f"deployer:task:{r.get(f'deployer:tenant:{t}')}")
        assert task["status"] == "PENDING" and "dispatchedAt" not in task
    assert [w["state"] for w in summary(plan_id)] == ["DONE", "AWAITING_APPROVAL"]

    result = worker.send_task(
        "deployer.approve",
        [{"planId": plan_id, "wave": 1}],
        kwargs={"by": "ops", "reason": "canary ok"},
    )
    if worker.conf.result_backend:
        assert result.get(timeout=20)["ok"] is True
    wait_for(lambda: status(r, plan_id) == "COMPLETED", timeout=60, what="plan COMPLETED")
    approved = [e for _, e in plan_events(r, plan_id) if e["type"] == "WAVE_APPROVED"]
    assert [(e["wave"], e["by"], e["reason"]) for e in approved] == [("1", "ops", "canary ok")]
    again = control.execute(Command.APPROVE, {"planId": plan_id, "wave": 1})
    assert (again["ok"], again["code"]) == (True, "ALREADY")  # a repeat: in effect
    later = control.execute(Command.APPROVE, {"planId": plan_id, "wave": 5})
    assert (later["ok"], later["code"]) == (False, "PLAN_NOT_AWAITING_APPROVAL")


def test_approving_a_plan_without_a_strategy_is_refused(worker, r, control):
    plan_id = unique("noapp")
    submit(worker, r, plan_id, [bg_tenant(unique("na"))])
    refused = control.execute(Command.APPROVE, {"planId": plan_id, "wave": 1})
    assert (refused["ok"], refused["code"]) == (False, "PLAN_HAS_NO_STRATEGY")


def test_status_json_metrics_and_the_approve_verb_speak_in_waves(worker, r):
    import json

    from prometheus_client import generate_latest
    from typer.testing import CliRunner

    from deployer.cli import app
    from deployer.metrics import registry_for

    runner = CliRunner()
    plan_id = unique("cliw")
    tenants = [unique("cw") for _ in range(3)]
    strategy = {"canary": [tenants[2]], "waves": {"type": "linear", "size": 1},
                "approval": "every", "failureBudget": {"max": "50%"}}  # fmt: skip
    submit(worker, r, plan_id, [bg_tenant(t) for t in tenants], strategy=strategy)
    key = f"deployer:plan:{plan_id}"
    wait_for(lambda: r.hget(key, "waveState") == "AWAITING_APPROVAL", timeout=30,
             what="wave 1 awaiting approval")  # fmt: skip

    out = runner.invoke(app, ["status", plan_id, "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    body = json.loads(out.output)
    assert body["strategy"]["canary"] == [tenants[2]] and body["strategy"]["approval"] == "every"
    assert [{k: w[k] for k in ("index", "state", "tenants", "done", "failed")}
            for w in body["waves"]] == [
        {"index": 0, "state": "DONE", "tenants": 1, "done": 1, "failed": 0},
        {"index": 1, "state": "AWAITING_APPROVAL", "tenants": 1, "done": 0, "failed": 0},
        {"index": 2, "state": "PENDING", "tenants": 1, "done": 0, "failed": 0},
    ]  # fmt: skip
    assert body["budget"] == {"max": 1, "used": 0, "scope": "plan", "onExceed": "pause",
                              "exceeded": False}  # fmt: skip
    text = runner.invoke(app, ["status", plan_id], catch_exceptions=False)
    assert text.exit_code == 0 and "AWAITING_APPROVAL" in text.output
    assert "failure budget: 0/1 (plan, on exceed pause)" in text.output
    metrics = generate_latest(registry_for(r)).decode()
    assert f'deployer_plan_waves{{plan_id="{plan_id}",state="AWAITING_APPROVAL"}} 1.0' in metrics
    assert f'deployer_plan_waves{{plan_id="{plan_id}",state="DONE"}} 1.0' in metrics

    for wave in (1, 2):
        wait_for(lambda w=wave: r.hget(key, "waveState") == "AWAITING_APPROVAL"
                 and r.hget(key, "wave") == str(w), timeout=30,
                 what=f"wave {wave} awaiting approval")  # fmt: skip
        out = runner.invoke(app, ["approve", "--plan", plan_id, "--by", "ops"])
        assert out.exit_code == 0, out.output
    wait_for(lambda: r.hget(key, "waveState") == "DONE", timeout=30, what="waves DONE")
    out = runner.invoke(app, ["approve", "--plan", plan_id, "--json"])
    assert out.exit_code == 2 and json.loads(out.output)["code"] == "PLAN_NOT_AWAITING_APPROVAL"


def test_a_plan_rollback_ends_its_waves_and_cancel_halts_them(worker, r, control):
    plan_id = unique("rbw")
    tenants = [unique("rw") for _ in range(3)]
    submit(worker, r, plan_id, [bg_tenant(t) for t in tenants],
           strategy={"canary": 1, "approval": "first"})  # fmt: skip
    key = f"deployer:plan:{plan_id}"
    wait_for(lambda: r.hget(key, "waveState") == "AWAITING_APPROVAL", timeout=30,
             what="wave 1 awaiting approval")  # fmt: skip
    assert control.execute(Command.ROLLBACK, {"planId": plan_id}, by="ops")["ok"]
    task = lambda t: r.hgetall(f"deployer:task:{r.get(f'deployer:tenant:{t}')}")  # noqa: E731
    wait_for(lambda: task(tenants[0])["status"] == "ROLLED_BACK", timeout=30, what="rolled back")
    assert r.hget(PREFIX + tenants[0], "metadata") == '{"version":19}'
    for t in tenants[1:]:  # wave 1 never started: cancelled, never written
        assert task(t)["status"] == "CANCELLED" and not r.exists(PREFIX + t)
    assert [w["state"] for w in summary(plan_id)] == ["DONE", "HALTED"]
    refused = control.execute(Command.APPROVE, {"planId": plan_id, "wave": 1})
    assert (refused["ok"], refused["code"]) == (False, "PLAN_NOT_AWAITING_APPROVAL")

    other = unique("cxw")
    submit(worker, r, other, [bg_tenant(unique("cx")) for _ in range(2)],
           strategy={"canary": 1, "approval": "first"})  # fmt: skip
    wait_for(lambda: r.hget(f"deployer:plan:{other}", "waveState") == "AWAITING_APPROVAL",
             timeout=30, what="wave 1 awaiting approval")  # fmt: skip
    assert control.execute(Command.CANCEL, {"planId": other})["ok"]
    assert r.hget(f"deployer:plan:{other}", "waveState") == "HALTED"
    assert r.hget(f"deployer:plan:{other}", "status") == "CANCELLED"


def test_a_bake_does_not_end_while_the_plan_is_paused_and_resume_continues(worker, r, control):
    plan_id = unique("pbake")
    tenants = [unique("pb") for _ in range(3)]
    submit(worker, r, plan_id, [bg_tenant(t) for t in tenants],
           strategy={"canary": 1, "bakeSeconds": 1})  # fmt: skip
    key = f"deployer:plan:{plan_id}"
    wait_for(lambda: r.hget(key, "waveState") == "BAKING", timeout=30, what="wave 0 baking")
    assert control.execute(Command.PAUSE, {"planId": plan_id}, by="ops")["ok"]
    bake_until = int(r.hget(key, "bakeUntil"))
    wait_for(lambda: time.time() * 1000 > bake_until + 2500, timeout=10, what="bake over")
    assert (r.hget(key, "waveState"), r.hget(key, "wave")) == ("BAKING", "0")
    assert r.hget(key, "status") == "PAUSED"
    assert control.execute(Command.RESUME, {"planId": plan_id}, by="ops")["ok"]
    wait_for(lambda: r.hget(key, "waveState") == "DONE", timeout=30, what="waves DONE")
    assert r.hget(key, "status") == "COMPLETED"


def test_retry_of_a_failed_canary_runs_it_again_after_later_waves(worker, r, control,
                                                                  session_fleet):  # fmt: skip
    from deployer.fleet import Behaviour

    bad = unique("rc-bad")
    session_fleet.behave(bad, Behaviour(reject=True))
    ok = [unique("rc-ok") for _ in range(2)]
    cfg = bg_tenant(bad, trunkGroup="tg-1", calledNumberRules="4001",
                    serviceNames=["blue-green-gateway", "portal"])  # fmt: skip
    plan_id = unique("retryw")
    # no failure budget: a failed canary does not stop the rollout (as without a strategy)
    submit(worker, r, plan_id, [cfg, *(bg_tenant(t) for t in ok)], strategy={"canary": [bad]})
    key = f"deployer:plan:{plan_id}"
    wait_for(lambda: r.hget(key, "waveState") == "DONE", timeout=30, what="waves DONE")
    assert r.hget(key, "status") == "FAILED"
    assert [(w["failed"], w["done"]) for w in summary(plan_id)] == [(1, 0), (0, 2)]
    session_fleet.behave(bad, Behaviour())
    assert control.execute(Command.RETRY, {"planId": plan_id})["ok"]
    wait_for(lambda: r.hget(key, "status") == "COMPLETED", timeout=30, what="plan COMPLETED")
    assert [(w["failed"], w["done"]) for w in summary(plan_id)] == [(0, 1), (0, 2)]
