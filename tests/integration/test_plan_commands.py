"""A plan-level pause or resume decides each task in Redis slices (plan_pause_slice.lua) as
lifecycle.decide does (a 100,000-tenant plan: tests/e2e/test_plan_brake.py)."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from deployer.lifecycle import Command, Effect, decide
from deployer.models import TaskStatus, task_id_for
from deployer.settings import get_settings
from deployer.state import keys
from deployer.state.store import Store, TaskRow
from tests.helpers import bg_tenant, unique

MOVE = "\nreturn {change_status(KEYS[1], KEYS[2], ARGV[1], 1)}"


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
    prelude = resources.files("deployer.state").joinpath("lua/_prelude.lua").read_text()
    move = r.register_script(prelude + MOVE)
    for i, (tenant, status) in enumerate(zip(tenants, STATUSES, strict=True)):
        task_key = keys.task(task_id_for(plan_id, tenant))
        if status != "PENDING":
            move(keys=[task_key, keys.plan(plan_id)], args=[status])
        if i in CONTROLS:
            r.hset(task_key, "control", CONTROLS[i])
        if i == 6:
            r.hset(task_key, "startedAt", 1)  # paused mid-flight
    expected = [decide(command, TaskStatus(s), CONTROLS.get(i)) for i, s in enumerate(STATUSES)]
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
