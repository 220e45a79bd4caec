"""The emergency brake on big plans: a plan-level pause, resume or cancel answers within a
second whatever the plan's size, takes effect for the whole plan at once, and its per-task
bookkeeping follows in slices that decide each task as lifecycle.decide does."""

from __future__ import annotations

import json
import time
from importlib import resources

import pytest

from deployer import keys
from deployer.lifecycle import Command, Effect, decide
from deployer.models import TaskStatus, task_id_for
from deployer.settings import get_settings
from deployer.store import Store, TaskRow, now_ms
from tests.helpers import bg_tenant, unique, wait_for

MOVE = "\nreturn {change_status(KEYS[1], KEYS[2], ARGV[1], 1)}"


@pytest.fixture()
def control(worker):
    from tasks.runtime import controller

    return controller()


def plan_events(r, plan_id, since_ms=0):
    return [f for _, f in r.xrange(keys.events_plan(plan_id), min=f"{since_ms}-0")]


@pytest.mark.timeout(600)
def test_pause_and_resume_of_a_100000_tenant_plan_answer_within_a_second(worker, r, control):
    """No stage of the plan starts after the pause answered (read from its events), and the
    plan's every task is decided in the background."""
    from tasks.runtime import planner, store

    plan_id = unique("huge")
    configs = [json.dumps(bg_tenant(f"{plan_id}-{i}")) for i in range(100_000)]
    rows = [TaskRow(f"{plan_id}-{i}", 1, c) for i, c in enumerate(configs)]
    assert store().create_plan(plan_id, rows, 50, "run-")
    planner().dispatch(plan_id)
    key = keys.plan(plan_id)
    wait_for(lambda: int(r.hget(key, "c:COMPLETED") or 0) >= 20, timeout=120, what="running")

    started = time.monotonic()
    paused = control.execute(Command.PAUSE, {"planId": plan_id}, by="ops", reason="brake")
    took = time.monotonic() - started
    answered = now_ms()
    assert paused["ok"], paused
    assert took < 1.0, f"pause answered in {took:.2f}s"
    # its bookkeeping, in the background (every worker's plan-timer loop)
    wait_for(lambda: not r.hget(key, "job") and r.hget(key, "status") == "PAUSED", timeout=180,
             what="every task paused")  # fmt: skip
    after = plan_events(r, plan_id, answered - 5000)
    starts = [e for e in after if e["type"] in ("STAGE_STARTED", "TASK_RUNNING")
              and int(e["ts"]) > answered]  # fmt: skip
    assert starts == [], starts[:3]
    counts = {s: int(r.hget(key, f"c:{s}") or 0) for s in ("PENDING", "RUNNING", "PAUSED")}
    assert counts["PENDING"] == counts["RUNNING"] == 0 and counts["PAUSED"] > 99_000
    assert [e["type"] for e in after].count("PLAN_PAUSE") == 1
    assert not r.exists(keys.plan_queue(plan_id))  # every queued tenant was paused

    started = time.monotonic()
    resumed = control.execute(Command.RESUME, {"planId": plan_id}, by="ops")
    took = time.monotonic() - started
    assert resumed["ok"] and took < 1.0, (resumed, took)
    again = now_ms()
    wait_for(lambda: any(e["type"] == "STAGE_STARTED" for e in plan_events(r, plan_id, again)),
             timeout=60, what="stages start again")  # fmt: skip

    started = time.monotonic()
    assert control.execute(Command.CANCEL, {"planId": plan_id}, by="ops")["ok"]
    assert time.monotonic() - started < 1.0
    wait_for(lambda: r.hget(key, "status") == "CANCELLED" and not r.hget(key, "job"),
             timeout=180, what="cancelled, every task")  # fmt: skip


STATUSES = ["PENDING", "RUNNING", "RUNNING", "RUNNING", "ROLLING_BACK", "PAUSED", "PAUSED",
            "COMPLETED", "FAILED", "CANCELLED", "ROLLED_BACK", "ROLLBACK_FAILED",
            "SUPERSEDED"]  # fmt: skip
#: index -> task control flag set before the command (a pause or cancel already asked)
CONTROLS = {2: "PAUSE", 3: "CANCEL"}


@pytest.mark.parametrize("command", [Command.PAUSE, Command.RESUME])
def test_a_sliced_pause_or_resume_decides_every_status_as_the_lifecycle_does(r, command):
    """The slices (plan_pause_slice.lua) against lifecycle.decide, task by task."""
    from deployer.control import Controller
    from deployer.planner import Planner

    store = Store(r, get_settings())
    plan_id = unique("statuses")
    tenants = [f"s{i}" for i in range(len(STATUSES))]
    rows = [TaskRow(t, 1, json.dumps(bg_tenant(t))) for t in tenants]
    store.create_plan(plan_id, rows, 100, "run-")
    prelude = resources.files("deployer").joinpath("lua/_prelude.lua").read_text()
    move = r.register_script(prelude + MOVE)
    for i, (tenant, status) in enumerate(zip(tenants, STATUSES, strict=True)):
        task_key = keys.task(task_id_for(plan_id, tenant))
        if status != "PENDING":
            move(keys=[task_key, keys.plan(plan_id)], args=[status])
        if i in CONTROLS:
            r.hset(task_key, "control", CONTROLS[i])
        if i == 6:
            r.hset(task_key, "startedAt", 1)  # paused mid-flight
    expected = [
        decide(command, TaskStatus(s), CONTROLS.get(i)) for i, s in enumerate(STATUSES)
    ]
    sent: list = []
    answer = Controller(Planner(store, get_settings(), sent.extend)).execute(
        command, {"planId": plan_id}, by="ops"
    )
    assert answer["ok"], answer
    counts = answer["counts"]
    for effect in Effect:
        want = sum(1 for d in expected if d.effect is effect)
        assert counts.get(effect.value, 0) == want, (effect, counts)
    for i, (tenant, decision) in enumerate(zip(tenants, expected, strict=True)):
        task = r.hgetall(keys.task(task_id_for(plan_id, tenant)))
        if decision.effect is Effect.NOW:
            assert task["status"] == decision.to, (i, task["status"])
        elif decision.effect is Effect.REQUEST:
            assert (task["status"], task["control"]) == (STATUSES[i], "PAUSE")
        elif decision.effect is Effect.WITHDRAW:
            assert task["status"] == STATUSES[i] and "control" not in task
        else:
            assert task["status"] == STATUSES[i]
            assert task.get("control") == CONTROLS.get(i)
    refused = {s["tenantId"]: s["code"] for s in answer["skipped"]}
    assert refused == {t: d.code for t, d in zip(tenants, expected, strict=True)
                       if d.effect is Effect.REFUSE}  # fmt: skip
    if command is Command.RESUME:  # the one paused mid-flight goes first, the other last
        order = [d.task_id for d in sent]
        assert order[0] == task_id_for(plan_id, "s6") and order[-1] == task_id_for(plan_id, "s5")
