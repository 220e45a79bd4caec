"""What operators of Argo Rollouts, Flagger or AppConfig expect, on a real worker and fleet:
promote, a budget override, which tenants are in which wave, maintenance windows."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from deployer import audit
from deployer.fleet import Behaviour
from deployer.lifecycle import Command
from deployer.models import task_id_for
from tests.helpers import bg_tenant, plan, run_cli, unique, wait_for


@pytest.fixture()
def control(worker):
    from tasks.runtime import controller

    return controller()


def submit(worker, r, plan_id, tenants, **extra):
    worker.send_task("deployer.submit_plan", [plan(plan_id, tenants, **extra)])
    wait_for(lambda: r.exists(f"deployer:plan:{plan_id}"), what="plan stored")


def history(r, plan_id):
    return [f for _, f in reversed(audit.history(r, plan_id=plan_id, count=10_000).events)]


def field(r, plan_id, name):
    return r.hget(f"deployer:plan:{plan_id}", name)


def bad_tenant(tenant: str) -> dict:
    cfg = bg_tenant(tenant, trunkGroup="tg-1", calledNumberRules="4001",
                    serviceNames=["blue-green-gateway", "portal"])  # fmt: skip
    cfg["sourceTenantDeployConfig"]["serviceNames"] = ["blue-green-gateway"]
    return cfg


def test_promote_ends_a_bake_now_and_all_skips_the_rest(worker, r):
    tenants = [unique("pr") for _ in range(3)]
    plan_id = unique("promote")
    strategy = {"canary": 1, "waves": {"type": "linear", "size": 1}, "bakeSeconds": 600}
    submit(worker, r, plan_id, [bg_tenant(t) for t in tenants], strategy=strategy)
    wait_for(lambda: field(r, plan_id, "waveState") == "BAKING", timeout=30, what="wave 0 baking")

    wrong = run_cli("promote", "--plan", plan_id, "--wave", "1", "--json")
    assert wrong.exit_code == 2 and json.loads(wrong.output)["code"] == "WAVE_NOT_CURRENT"
    first = run_cli("promote", "--plan", plan_id, "--wave", "0", "--by", "ops")
    assert first.exit_code == 0, first.output
    wait_for(lambda: field(r, plan_id, "wave") == "1"
             and field(r, plan_id, "waveState") == "BAKING", timeout=30,
             what="wave 1 baking")  # fmt: skip
    everything = run_cli("promote", "--plan", plan_id, "--all", "--reason", "looks fine")
    assert everything.exit_code == 0, everything.output
    wait_for(lambda: field(r, plan_id, "status") == "COMPLETED", timeout=30, what="COMPLETED")

    events = history(r, plan_id)
    promoted = [(e["wave"], e["all"], e["by"]) for e in events if e["type"] == "WAVE_PROMOTED"]
    assert promoted[0] == ("0", "0", "ops") and promoted[1][:2] == ("1", "1")
    baking = [e["wave"] for e in events if e["type"] == "WAVE_BAKING"]
    assert baking == ["0", "1"]  # wave 2 never baked
    refusal = [e for e in events if e["type"] == "COMMAND_REFUSED"]
    assert [(e["command"], e["code"]) for e in refusal] == [("promote", "WAVE_NOT_CURRENT")]
    again = run_cli("promote", "--plan", plan_id, "--json")
    assert again.exit_code == 2 and json.loads(again.output)["code"] == "NOTHING_TO_PROMOTE"


def test_promote_of_a_wave_awaiting_approval_needs_the_approval_too(worker, r):
    tenants = [unique("pa") for _ in range(2)]
    plan_id = unique("promote-appr")
    submit(worker, r, plan_id, [bg_tenant(t) for t in tenants],
           strategy={"canary": 1, "approval": "first", "bakeSeconds": 600})  # fmt: skip
    wait_for(lambda: field(r, plan_id, "waveState") == "BAKING", timeout=30, what="baking")
    assert run_cli("promote", "--plan", plan_id).exit_code == 0
    wait_for(lambda: field(r, plan_id, "waveState") == "AWAITING_APPROVAL", what="waiting")
    refused = run_cli("promote", "--plan", plan_id, "--json")
    assert refused.exit_code == 2 and json.loads(refused.output)["code"] == "APPROVAL_REQUIRED"
    assert field(r, plan_id, "waveState") == "AWAITING_APPROVAL"
    ok = run_cli("promote", "--plan", plan_id, "--approve", "--by", "lead", "--reason", "go")
    assert ok.exit_code == 0, ok.output
    # approved, and promoted: wave 1 runs and skips its own bake
    wait_for(lambda: field(r, plan_id, "status") == "COMPLETED", timeout=30, what="COMPLETED")
    events = history(r, plan_id)
    approved = [e for e in events if e["type"] == "WAVE_APPROVED"]
    assert [(e["wave"], e["by"], e["reason"]) for e in approved] == [("1", "lead", "promoted: go")]
    assert [e["wave"] for e in events if e["type"] == "WAVE_BAKING"] == ["0"]


def test_a_budget_override_lets_an_auto_paused_plan_go_on_on_purpose(
    worker, r, control, session_fleet
):
    bad = unique("bo-bad")
    session_fleet.behave(bad, Behaviour(reject=True))
    ok = [unique("bo-ok") for _ in range(3)]
    tenants = [bg_tenant(ok[0]), bad_tenant(f"{bad}-1"), bg_tenant(ok[1]),
               bad_tenant(f"{bad}-2"), bg_tenant(ok[2])]  # fmt: skip
    plan_id = unique("override")
    submit(worker, r, plan_id, tenants, maxConcurrency=1,
           strategy={"failureBudget": {"max": 0, "onExceed": "pause"}})  # fmt: skip
    wait_for(lambda: field(r, plan_id, "status") == "PAUSED", timeout=30, what="auto-paused")

    bad_value = control.execute(Command.BUDGET, {"planId": plan_id}, budget="lots")
    assert (bad_value["ok"], bad_value["code"]) == (False, "BUDGET_INVALID")
    # two failed tenants tolerated from now on: the one so far and one more
    resumed = run_cli("resume", "--plan", plan_id, "--budget", "2", "--by", "ops",
                      "--reason", "one more is fine")  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    # the second failure stays within the raised budget: no second pause, the rest runs
    wait_for(lambda: field(r, plan_id, "status") == "FAILED", timeout=60, what="plan over")
    for t in ok:
        assert r.hget(f"deployer:task:{task_id_for(plan_id, t)}", "status") == "COMPLETED"
    events = history(r, plan_id)
    types = [e["type"] for e in events]
    assert types.count("BUDGET_EXCEEDED") == 1 and types.count("PLAN_AUTO_PAUSED") == 1
    changed = [e for e in events if e["type"] == "BUDGET_CHANGED"]
    assert [(e["from"], e["to"], e["by"]) for e in changed] == [("0", "2", "ops")]
    shown = run_cli("status", plan_id, "--json")
    budget = json.loads(shown.output)["budget"]
    assert (budget["max"], budget["used"], budget["exceeded"]) == (2, 2, False)
    assert "stopReason" not in json.loads(shown.output)


def _clock(at: datetime) -> str:
    return at.strftime("%H:%M:%S")


def test_no_wave_starts_outside_the_window_and_a_running_one_finishes(worker, r, session_fleet):
    """Two short periods (seconds apart) of a window in real time: wave 0 runs in the first,
    wave 1 waits for the second (no start outside), and keeps running past the second's end
    until its tenant finishes; wave 2 then waits for the next day."""
    now = datetime.now(UTC).replace(microsecond=0)
    slow = unique("win-slow")
    session_fleet.behave(slow, Behaviour(delay=2.5))  # wave 1's tenant outlives its period
    tenants = [bg_tenant(unique("win")), bg_tenant(slow), bg_tenant(unique("win"))]
    first, second = (now - timedelta(seconds=5), now + timedelta(seconds=4)), (
        now + timedelta(seconds=9), now + timedelta(seconds=10))  # fmt: skip
    window = {"timeZone": "UTC", "periods": [
        {"start": _clock(a), "end": _clock(b)} for a, b in (first, second)]}  # fmt: skip
    plan_id = unique("window")
    strategy = {"canary": 1, "waves": {"type": "linear", "size": 1}, "bakeSeconds": 4,
                "window": window}  # fmt: skip
    submit(worker, r, plan_id, tenants, strategy=strategy)
    wait_for(lambda: field(r, plan_id, "waveState") == "AWAITING_WINDOW", timeout=20,
             what="wave 1 waiting for the window")  # fmt: skip
    opens = datetime.fromisoformat(run_json(plan_id)["windowOpensAt"].replace("Z", "+00:00"))
    assert opens == second[0]
    wait_for(lambda: field(r, plan_id, "wave") == "2", timeout=40, what="wave 1 done")
    wait_for(lambda: field(r, plan_id, "waveState") == "AWAITING_WINDOW", timeout=20,
             what="wave 2 waiting for tomorrow's window")  # fmt: skip

    events = history(r, plan_id)
    started = {e["wave"]: int(e["ts"]) for e in events if e["type"] == "WAVE_STARTED"}
    ms = lambda at: int(at.timestamp() * 1000)  # noqa: E731
    assert set(started) == {"0", "1"}
    assert started["1"] >= ms(second[0])  # not before the second period opened
    assert started["1"] - ms(second[0]) < 1000  # but within a second of it
    wave1_done = next(int(e["ts"]) for e in events if e["type"] == "WAVE_DONE"
                      and e["wave"] == "1")  # fmt: skip
    assert wave1_done > ms(second[1])  # it ran on after the period ended, and finished
    assert r.hget(f"deployer:task:{task_id_for(plan_id, slow)}", "status") == "COMPLETED"
    tomorrow = first[0] + timedelta(days=1)
    assert run_json(plan_id)["windowOpensAt"] == tomorrow.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert r.zscore("deployer:plan-timers", plan_id) == ms(tomorrow)
    assert run_cli("cancel", "--plan", plan_id).exit_code == 0


def run_json(plan_id):
    return json.loads(run_cli("status", plan_id, "--json").output)


def test_a_window_closed_at_submit_holds_wave_0(worker, r):
    later = datetime.now(UTC) + timedelta(hours=2)
    window = {"periods": [{"start": later.strftime("%H:00"),
                           "end": (later + timedelta(hours=1)).strftime("%H:00")}]}  # fmt: skip
    plan_id = unique("closed")
    submit(worker, r, plan_id, [bg_tenant(unique("cw"))], strategy={"window": window})
    wait_for(lambda: r.zscore("deployer:plan-timers", plan_id) is not None
             and r.zscore("deployer:plan-timers", plan_id) > time.time() * 1000 + 3600_000,
             what="waiting for its opening")  # fmt: skip
    shown = run_json(plan_id)
    assert shown["waveState"] == "AWAITING_WINDOW" and shown["waves"][0]["state"] == (
        "AWAITING_WINDOW")  # fmt: skip
    assert shown["windowOpensAt"].startswith(later.strftime("%Y-%m-%dT%H:00:00"))
    tenant = shown["tasks"][0]["tenantId"]
    task = r.hgetall(f"deployer:task:{task_id_for(plan_id, tenant)}")
    assert task["status"] == "PENDING" and "dispatchedAt" not in task
    assert run_cli("cancel", "--plan", plan_id).exit_code == 0
