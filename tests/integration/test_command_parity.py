"""Rules written twice, in Python and in Lua, checked against each other on the real scripts.

A whole-plan pause, resume or cancel decides its tasks in Redis, a slice per script
(lua/plan_pause_slice.lua, lua/plan_cancel_slice.lua), while one tenant's command is decided
by `lifecycle.decide` in Python and written by lua/task_command.lua. Over every task status
and pending flag (none, PAUSE, CANCEL), started or not:

- the slices decide as `lifecycle.decide` does (effect counts, each task's status and flag
  after, each refusal's code);
- what an acting slice writes to a task (status, flag, token, fields, its event, a parked
  HealthCheck sent at once, the plan's and its wave's counters) is what task_command.lua
  writes for the same decision.

A failure budget is judged in Lua when a task fails (the prelude's wave_moved stops the
plan) and read in Python by the plan's view (`Rollout.budget`): the view reads exceeded
exactly when the script stopped the plan.

(The plan status table, written in both, has its own: tests/integration/test_plan_status.py.)
"""

from __future__ import annotations

import json
from collections import Counter
from importlib import resources
from typing import Any

import pytest

from deployer.control import Controller
from deployer.lifecycle import Command, Effect, decide
from deployer.models import TaskStatus, task_id_for
from deployer.planner import Planner
from deployer.settings import get_settings
from deployer.state import keys, prelude
from deployer.state.record import TaskRecord
from deployer.state.store import Store, TaskRow, now_ms
from deployer.strategy import Strategy
from deployer.waves import Rollout, wave_plan
from tests.helpers import bg_tenant, unique

DAY_MS = 86_400_000
MOVE = "\nreturn {change_status(KEYS[1], KEYS[2], ARGV[1], 1)}"
CONTROLS = (None, "PAUSE", "CANCEL")
#: Every (status, pending flag, a stage started) a command may find a task in.
CASES = [(s, c, started) for s in TaskStatus for c in CONTROLS for started in (False, True)]
PLAN_COMMANDS = (Command.PAUSE, Command.RESUME, Command.CANCEL)
ACTING = (Effect.NOW, Effect.REQUEST, Effect.WITHDRAW)
FLAG = {Command.PAUSE: "PAUSE", Command.CANCEL: "CANCEL"}
#: What a command writes to a task, compared between the two paths (`token` and `endedAt`:
#: whether set; timestamps and run tokens differ by construction).
FIELDS = ("status", "control", "controlBy", "controlReason", "gen", "cancelledBy", "force",
          "supersededBy")  # fmt: skip


def _controller(r: Any) -> tuple[Controller, list[Any]]:
    sent: list[Any] = []
    store = Store(r, get_settings())
    return Controller(Planner(store, get_settings(), sent.extend)), sent


def _plan_in(
    r: Any, cases: list[tuple[TaskStatus, str | None, bool]], tag: str, slots: int = 1000
) -> list[str]:
    """A plan whose i-th task is in cases[i]: its status (through the prelude's
    change_status, so the plan's counters agree), its pending flag, whether it started;
    `slots` tasks may run at once. Answers the task ids."""
    store = Store(r, get_settings())
    plan_id = unique(tag)
    tenants = [unique(f"{tag}{i}") for i in range(len(cases))]
    rows = [TaskRow(t, 1, json.dumps(bg_tenant(t))) for t in tenants]
    assert store.create_plan(plan_id, rows, 1000, f"{plan_id}-")
    text = resources.files("deployer.state").joinpath("lua/_prelude.lua").read_text()
    move = r.register_script(prelude.configure_prelude(text) + MOVE)
    # every task in wave 0, the current one: its counters move with the tasks
    wave = {"wave": 0, "w:0:c:PENDING": len(cases)}
    r.hset(keys.plan(plan_id), mapping={"maxConcurrency": slots, **wave})
    ids = [task_id_for(plan_id, t) for t in tenants]
    # parked, due in a day (no park record: a parking tick that pops one drops it)
    r.zadd(keys.PARKED, {task_id: now_ms() + DAY_MS for task_id in ids})
    for task_id, (status, control, started) in zip(ids, cases, strict=True):
        r.hset(keys.task(task_id), "wave", "0")
        if status is not TaskStatus.PENDING:
            move(keys=[keys.task(task_id), keys.plan(plan_id)], args=[status.value])
        fields = {"control": control} if control else {}
        if started:
            fields["startedAt"] = "1"
        if fields:
            r.hset(keys.task(task_id), mapping=fields)
    return ids


def _task(r: Any, task_id: str) -> dict[str, Any]:
    raw = r.hgetall(keys.task(task_id))
    out: dict[str, Any] = {f: raw.get(f) for f in FIELDS}
    out["token"] = bool(raw.get("token"))
    out["endedAt"] = bool(raw.get("endedAt"))
    due = r.zscore(keys.PARKED, task_id)
    out["parked sent"] = due is None or due <= now_ms()
    return out


def _events(r: Any, plan_id: str) -> dict[str, list[tuple[str, ...]]]:
    """Each task's events in the plan's stream: (type, from, to, by, reason)."""
    out: dict[str, list[tuple[str, ...]]] = {}
    for _, e in r.xrange(keys.events_plan(plan_id)):
        if e.get("taskId"):
            out.setdefault(e["taskId"], []).append(
                tuple(e.get(k, "") for k in ("type", "from", "to", "by", "reason"))
            )
    return out


def _counters(r: Any, plan_id: str) -> dict[str, int]:
    plan = r.hgetall(keys.plan(plan_id))
    return {k: int(v) for k, v in plan.items() if k.startswith(("c:", "w:0:c:")) and int(v)}


@pytest.mark.parametrize("command", PLAN_COMMANDS, ids=lambda c: c.value)
def test_a_plan_commands_slices_decide_every_status_and_flag_as_the_lifecycle_does(r, command):
    ids = _plan_in(r, CASES, "slices")
    plan_id = r.hget(keys.task(ids[0]), "planId")
    before = [r.hgetall(keys.task(t)) for t in ids]
    expected = [decide(command, s, c) for s, c, _ in CASES]
    controller, _ = _controller(r)

    answer = controller.execute(command, {"planId": plan_id}, by="ops", reason="parity")

    assert answer["ok"] and "pending" not in answer, answer  # every slice done
    want = Counter(d.effect.value for d in expected)
    assert {k: v for k, v in answer["counts"].items() if v} == dict(want)
    refused = {s["tenantId"]: s["code"] for s in answer["skipped"]}
    assert refused == {
        b["tenantId"]: d.code for b, d in zip(before, expected, strict=True)
        if d.effect is Effect.REFUSE
    }  # fmt: skip
    for i, (task_id, decision, was) in enumerate(zip(ids, expected, before, strict=True)):
        now = r.hgetall(keys.task(task_id))
        case = (i, CASES[i], decision.effect)
        if decision.effect is Effect.NOW:
            assert now["status"] == decision.to, case
        elif decision.effect is Effect.REQUEST:
            assert (now["status"], now.get("control")) == (was["status"], FLAG[command]), case
        elif decision.effect is Effect.WITHDRAW:
            assert (now["status"], now.get("control")) == (was["status"], None), case
        else:
            assert (now["status"], now.get("control")) == (was["status"], was.get("control")), case


@pytest.mark.parametrize("command", PLAN_COMMANDS, ids=lambda c: c.value)
def test_a_slice_writes_what_one_tenants_command_writes(r, command):
    cases = [(s, c, st) for s, c, st in CASES if decide(command, s, c).effect in ACTING]
    # no slot is given meanwhile: one tenant's command fills its plan's slots after it, the
    # plan command (its flag set) does not; a slot given moves the token on
    one, whole = _plan_in(r, cases, "one", slots=0), _plan_in(r, cases, "whole", slots=0)
    one_plan, whole_plan = (r.hget(keys.task(ids[0]), "planId") for ids in (one, whole))
    controller, _ = _controller(r)

    for task_id in one:  # task by task: lifecycle.decide, then task_command.lua
        tenant = r.hget(keys.task(task_id), "tenantId")
        target = {"planId": one_plan, "tenantId": tenant}
        answer = controller.execute(command, target, by="ops", reason="parity")
        assert answer["ok"], answer
    answer = controller.execute(command, {"planId": whole_plan}, by="ops", reason="parity")
    assert answer["ok"] and "pending" not in answer, answer

    events = _events(r, one_plan), _events(r, whole_plan)
    for i, (a, b) in enumerate(zip(one, whole, strict=True)):
        assert _task(r, a) == _task(r, b), (i, cases[i])
        assert events[0].get(a) == events[1].get(b), (i, cases[i])
    assert _counters(r, one_plan) == _counters(r, whole_plan)
    r.zrem(keys.PARKED, *one, *whole)


def test_a_resume_takes_first_the_tenants_a_stage_started_as_task_record_reads_started(r):
    """Which pass of a plan's resume takes a task (plan_pause_slice.lua's `started`: the
    mid-flight ones are queued first) is `TaskRecord.started`, however the task shows it."""
    marks = [{}, {"startedAt": "1"}, {"checkpoint": "0"}, {"checkpoint": "-1"},
             {"startedAt": "", "checkpoint": "2"},
             {"startedAt": "5", "checkpoint": "-1"}]  # fmt: skip
    ids = _plan_in(r, [(TaskStatus.PAUSED, None, False)] * len(marks), "started")
    for task_id, mark in zip(ids, marks, strict=True):
        if mark:
            r.hset(keys.task(task_id), mapping=mark)
    started = {t for t in ids if TaskRecord.from_hash(r.hgetall(keys.task(t))).started}
    assert 0 < len(started) < len(ids)
    controller, sent = _controller(r)

    plan_id = r.hget(keys.task(ids[0]), "planId")
    answer = controller.execute(Command.RESUME, {"planId": plan_id}, by="ops")

    assert answer["ok"] and "pending" not in answer, answer
    order = [d.task_id for d in sent]
    assert sorted(order) == sorted(ids)
    assert set(order[: len(started)]) == started, (order, started)
    r.zrem(keys.PARKED, *ids)


@pytest.mark.parametrize("scope", ["plan", "wave"])
@pytest.mark.parametrize("limit", [0, 1, 2])
@pytest.mark.parametrize("forgiven", [0, 1])
def test_the_budget_stops_the_plan_exactly_when_the_plan_view_reads_it_exceeded(
    r, scope, limit, forgiven
):
    """Tasks of the current wave fail one by one (at most four of its five: the wave never
    runs out of live tasks, so its step never moves the plan to the next wave meanwhile)."""
    strategy = Strategy.model_validate(
        {"waves": {"type": "linear", "size": 5}, "failureBudget": {"max": limit, "scope": scope}}
    )
    store = Store(r, get_settings())
    plan_id = unique("budget")
    tenants = [unique(f"b{i}") for i in range(10)]
    rows = [TaskRow(t, 1, json.dumps(bg_tenant(t))) for t in tenants]
    waves = wave_plan(plan_id, tenants, strategy, get_settings())
    assert store.create_plan(plan_id, rows, 10, f"{plan_id}-", waves=waves)
    r.hset(keys.plan(plan_id), "budgetForgiven" if scope == "plan" else "w:0:forgiven", forgiven)
    text = resources.files("deployer.state").joinpath("lua/_prelude.lua").read_text()
    move = r.register_script(prelude.configure_prelude(text) + MOVE)
    first_wave = [t for t, w in zip(tenants, waves.wave_of, strict=True) if w == 0]

    for failed, tenant in enumerate(first_wave[:4], 1):
        task_key = keys.task(task_id_for(plan_id, tenant))
        move(keys=[task_key, keys.plan(plan_id)], args=["FAILED"])
        plan = r.hgetall(keys.plan(plan_id))
        stopped = "budgetExceededWave" in plan  # the script's record of its decision
        unrecorded = {k: v for k, v in plan.items() if not k.startswith("budgetExceeded")}
        rollout = Rollout.from_hash(unrecorded)
        assert rollout is not None and rollout.wave == 0
        budget = rollout.budget()
        assert budget is not None
        assert budget["exceeded"] is stopped, (failed, budget, plan.get("stopReason"))
        assert stopped is (failed - forgiven > limit)
