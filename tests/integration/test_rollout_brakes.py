"""Brakes that never make things worse, on real Redis, a real worker and the real fleet: a
failure budget's rollback leaves a newer plan's tenants alone, an approval is bound to its
wave, and a plan with a strategy says what it is doing while it bakes and rolls back."""

from __future__ import annotations

import json
import threading

import pytest

from deployer import audit
from deployer.fleet import Behaviour
from deployer.lifecycle import Command
from deployer.models import task_id_for
from tests.helpers import bg_tenant, plan, run_cli, unique, wait_for

PREFIX = "icc_ai_ops_srv:tenant_config:"


@pytest.fixture()
def control(worker):
    from tasks.runtime import controller

    return controller()


def submit(worker, r, plan_id, tenants, **extra):
    worker.send_task("deployer.submit_plan", [plan(plan_id, tenants, **extra)])
    wait_for(lambda: r.exists(f"deployer:plan:{plan_id}"), what="plan stored")


def task(r, plan_id, tenant):
    return r.hgetall(f"deployer:task:{task_id_for(plan_id, tenant)}")


def version(r, tenant):
    return json.loads(r.hget(PREFIX + tenant, "metadata") or "{}").get("version")


def history(r, plan_id):
    """The plan's events, oldest first."""
    return [f for _, f in reversed(audit.history(r, plan_id=plan_id, count=10_000).events)]


def view(plan_id):
    from deployer import views
    from tasks.runtime import store

    return views.plan_view(store(), plan_id, sample=0)


def bad_tenant(tenant: str, version: int = 20) -> dict:
    """Fails at its portal stage (the fleet refuses it); its previous config needs only the
    gateway, so its rollback succeeds."""
    cfg = bg_tenant(tenant, version=version, trunkGroup="tg-1", calledNumberRules="4001",
                    serviceNames=["blue-green-gateway", "portal"])  # fmt: skip
    cfg["sourceTenantDeployConfig"]["serviceNames"] = ["blue-green-gateway"]
    return cfg


class Sampler:
    """The plan's status, wave state and budget, read every 20 ms in a thread until stopped:
    what anyone polling the plan would have seen."""

    def __init__(self, plan_id: str) -> None:
        self.plan_id = plan_id
        self.samples: list[dict] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(0.02):
            v = view(self.plan_id)
            if v:
                self.samples.append(v)

    def stop(self) -> list[dict]:
        self.stopped.set()
        self.thread.join(5)
        return self.samples


def test_a_budget_rollback_leaves_a_newer_plans_tenants_alone_unless_forced(
    worker, r, control, session_fleet
):
    """Plan A's canary deploys X and Y at v20/v21; during A's bake plan B deploys them at
    v30/v31. A's next wave fails and its budget rolls A back: before, v19 was written over
    B's v30/v31 while B read COMPLETED. Now X and Y end SUPERSEDED in A, counted and shown,
    B's versions stay; `rollback --plan A --force` writes the old version, and says so."""
    x, y, z = unique("nx"), unique("ny"), unique("nz-bad")
    session_fleet.behave(z, Behaviour(reject=True))
    plan_a, plan_b = unique("planA"), unique("planB")
    strategy = {"canary": [x, y], "bakeSeconds": 600,
                "failureBudget": {"max": 0, "scope": "plan", "onExceed": "rollback"}}  # fmt: skip
    submit(worker, r, plan_a, [bg_tenant(x, 20), bg_tenant(y, 21), bad_tenant(z)],
           strategy=strategy)  # fmt: skip
    key_a = f"deployer:plan:{plan_a}"
    wait_for(lambda: r.hget(key_a, "waveState") == "BAKING", timeout=30, what="A baking")
    assert (version(r, x), version(r, y)) == (20, 21)

    submit(worker, r, plan_b, [bg_tenant(x, 30), bg_tenant(y, 31)])
    wait_for(lambda: r.hget(f"deployer:plan:{plan_b}", "status") == "COMPLETED", timeout=30,
             what="B COMPLETED")  # fmt: skip
    assert (version(r, x), version(r, y)) == (30, 31)

    sampler = Sampler(plan_a)
    promoted = run_cli("promote", "--plan", plan_a, "--by", "ops", "--reason", "B is out")
    assert promoted.exit_code == 0, promoted.output  # A's wave 1 starts: z fails
    wait_for(lambda: r.hget(key_a, "status") == "ROLLED_BACK", timeout=60, what="A rolled back")
    samples = sampler.stop()

    for tenant, newer in ((x, 30), (y, 31)):
        t = task(r, plan_a, tenant)
        assert t["status"] == "SUPERSEDED", t
        assert t["supersededBy"] == task_id_for(plan_b, tenant)
        assert version(r, tenant) == newer  # B's config intact
    assert task(r, plan_a, z)["status"] == "ROLLED_BACK" and version(r, z) == 19
    assert r.hget(f"deployer:plan:{plan_b}", "status") == "COMPLETED"
    a = view(plan_a)
    assert a["counts"] == {"SUPERSEDED": 2, "ROLLED_BACK": 1}
    events = history(r, plan_a)
    left = [e for e in events if e["type"] == "TASK_SUPERSEDED"]
    assert sorted(e["tenantId"] for e in left) == sorted([x, y])
    assert all("left alone" in e["reason"] for e in left)
    assert [e["superseded"] for e in events if e["type"] == "PLAN_ROLLBACK"] == ["2"]
    # statuses during and after the rollback: never PAUSED, the budget not "0 used"
    seen = {s["status"] for s in samples}
    assert samples and "PAUSED" not in seen, seen
    assert a["budget"]["exceeded"] is True and a["budget"]["used"] == 1
    assert "failure budget exceeded" in a["stopReason"]

    forced = run_cli("rollback", "--plan", plan_a, "--force", "--by", "ops", "--reason",
                     "A's v19 is what we want")  # fmt: skip
    assert forced.exit_code == 0, forced.output
    wait_for(lambda: all(task(r, plan_a, t)["status"] == "ROLLED_BACK" for t in (x, y)),
             timeout=30, what="forced rollback done")  # fmt: skip
    assert (version(r, x), version(r, y)) == (19, 19)  # what the operator asked for
    asked = [e for e in history(r, plan_a) if e["type"] == "TASK_ROLLBACK" and e.get("by") == "ops"]
    assert {e["tenantId"] for e in asked} == {x, y}
    assert all(e["reason"] == "forced: A's v19 is what we want" for e in asked)


def test_a_late_or_redelivered_approval_never_approves_the_next_wave(worker, r, control):
    tenants = [unique("ap") for _ in range(3)]
    plan_id = unique("every")
    strategy = {"canary": 1, "waves": {"type": "linear", "size": 1}, "approval": "every"}
    submit(worker, r, plan_id, [bg_tenant(t) for t in tenants], strategy=strategy)
    key = f"deployer:plan:{plan_id}"

    def awaiting(wave: int) -> bool:
        return r.hget(key, "waveState") == "AWAITING_APPROVAL" and r.hget(key, "wave") == str(wave)

    wait_for(lambda: awaiting(1), timeout=30, what="wave 1 awaiting approval")
    # no wave named: a task message is refused, whatever waits
    worker.send_task("deployer.approve", [{"planId": plan_id}], kwargs={"by": "bot"})
    worker.send_task("deployer.approve", [{"planId": plan_id, "wave": 1}], kwargs={"by": "ops"})
    wait_for(lambda: awaiting(2), timeout=30, what="wave 2 awaiting approval")

    # the approval of wave 1 comes again, twice (a late retry, a redelivery), as a plain
    # Celery client sends it
    for _ in range(2):
        worker.send_task("deployer.approve", [{"planId": plan_id, "wave": 1}], kwargs={"by": "ops"})

    def refusals(code: str) -> list[dict]:
        return [e for e in history(r, plan_id)
                if e["type"] == "COMMAND_REFUSED" and e["code"] == code]  # fmt: skip

    late = wait_for(lambda: len(refusals("WAVE_NOT_AWAITING_APPROVAL")) == 2 and
                    refusals("WAVE_NOT_AWAITING_APPROVAL"), timeout=20,
                    what="both late approvals refused")  # fmt: skip
    assert all((e["wave"], e["awaitingWave"]) == ("1", "2") for e in late)
    assert "wave 1 is not awaiting approval; wave 2 is" in late[0]["message"]
    assert [e["command"] for e in refusals("WAVE_REQUIRED")] == ["approve"]
    assert awaiting(2)  # still waiting: nothing approved it
    assert task(r, plan_id, tenants[2])["status"] == "PENDING"
    assert "dispatchedAt" not in task(r, plan_id, tenants[2])

    answer = control.execute(Command.APPROVE, {"planId": plan_id, "wave": 2}, by="ops")
    assert answer["ok"] and answer["wave"] == 2, answer
    wait_for(lambda: r.hget(key, "status") == "COMPLETED", timeout=30, what="plan COMPLETED")
    approved = [(e["wave"], e["by"]) for e in history(r, plan_id) if e["type"] == "WAVE_APPROVED"]
    assert approved == [("1", "ops"), ("2", "ops")]


def test_the_last_bake_holds_the_plan_and_every_bake_ends_within_a_second(worker, r):
    tenants = [unique("bk") for _ in range(3)]
    plan_id = unique("bakes")
    strategy = {"canary": 1, "waves": {"type": "linear", "size": 1}, "bakeSeconds": 2}
    sampler = Sampler(plan_id)
    submit(worker, r, plan_id, [bg_tenant(t) for t in tenants], strategy=strategy)
    key = f"deployer:plan:{plan_id}"
    wait_for(lambda: r.hget(key, "status") == "COMPLETED", timeout=60, what="plan COMPLETED")
    samples = sampler.stop()

    # whoever waited on the plan's status was protected by its last bake
    last_bake = [s for s in samples if s.get("wave") == 2 and s.get("waveState") == "BAKING"]
    assert last_bake, "the last bake was never seen"
    assert {s["status"] for s in last_bake} == {"RUNNING"}
    assert all(s["waveState"] == "DONE" for s in samples if s["status"] == "COMPLETED")

    events = history(r, plan_id)
    baking = [e for e in events if e["type"] == "WAVE_BAKING"]
    done = {e["wave"]: int(e["ts"]) for e in events if e["type"] == "WAVE_DONE"}
    assert [e["wave"] for e in baking] == ["0", "1", "2"]
    for e in baking:
        late = done[e["wave"]] - int(e["until"])
        assert 0 <= late < 1000, f"wave {e['wave']}'s bake ended {late} ms after its time"
    # ISO-8601 like every other time in status
    w = view(plan_id)["waves"][0]
    assert w["startedAt"].endswith("Z") and w["endedAt"].endswith("Z")


def test_a_budget_exceeded_with_pause_reads_paused_and_its_wave_too(worker, r, session_fleet):
    bad, ok = unique("pb-bad"), [unique("pb-ok") for _ in range(3)]
    session_fleet.behave(bad, Behaviour(reject=True))
    plan_id = unique("pause-budget")
    strategy = {"waves": {"type": "linear", "size": 2},
                "failureBudget": {"max": 0, "onExceed": "pause"}}  # fmt: skip
    submit(worker, r, plan_id, [bad_tenant(bad), *[bg_tenant(t) for t in ok]],
           strategy=strategy, maxConcurrency=1)  # fmt: skip
    wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "PAUSED", timeout=30,
             what="auto-paused")  # fmt: skip
    v = view(plan_id)
    assert v["waveState"] == "PAUSED" and v["waves"][0]["state"] == "PAUSED"
    assert v["budget"]["exceeded"] and v["budget"]["used"] == 1
    assert "resume" in v["commands"] and "pause" not in v["commands"]
