"""The plan status table (tests/unit/test_plan_status.py) driven through the real Lua:
a real plan is created by plan_create.lua and its tasks are moved by the prelude's
change_status, which keeps the counters and re-derives the plan in the same script."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from deployer.models import task_id_for
from deployer.settings import get_settings
from deployer.state import keys
from deployer.state.store import Store, TaskRow
from tests.helpers import unique
from tests.unit.test_plan_status import HOLDS, TABLE, hold_id, row_id

MOVE = "\nreturn {change_status(KEYS[1], KEYS[2], ARGV[1], 1)}"


@pytest.fixture()
def store(r):
    return Store(r, get_settings())


@pytest.mark.parametrize(("counts", "control", "expected"), TABLE, ids=map(row_id, TABLE))
def test_derive_plan_in_lua_follows_the_table(r, store, counts, control, expected):
    prelude = resources.files("deployer.state").joinpath("lua/_prelude.lua").read_text()
    move = r.register_script(prelude + MOVE)
    plan_id = unique()
    statuses = [s for s, n in counts.items() for _ in range(n)]
    tenants = [f"t{i}" for i in range(len(statuses))]
    config = json.dumps({"tenantId": "x"})
    store.create_plan(plan_id, [TaskRow(t, 1, config) for t in tenants], 10, "run-")
    if control:
        r.hset(keys.plan(plan_id), "control", control)
    for tenant, status in zip(tenants, statuses, strict=True):
        task_key = keys.task(task_id_for(plan_id, tenant))
        if status != "PENDING":
            move(keys=[task_key, keys.plan(plan_id)], args=[status])
    # re-derive after the control flag too (rows whose tasks all stay PENDING move none):
    # one task out of its status and back, through the same change_status
    first = [keys.task(task_id_for(plan_id, tenants[0])), keys.plan(plan_id)]
    move(keys=first, args=["PAUSED" if statuses[0] != "PAUSED" else "PENDING"])
    move(keys=first, args=[statuses[0]])
    plan = r.hgetall(keys.plan(plan_id))
    assert plan["status"] == expected
    assert {k[2:]: int(v) for k, v in plan.items() if k.startswith("c:") and int(v)} == counts


@pytest.mark.parametrize(("counts", "fields", "expected"), HOLDS, ids=map(hold_id, HOLDS))
def test_derive_plan_in_lua_holds_a_plan_whose_waves_or_command_are_not_over(
    r, store, counts, fields, expected
):
    prelude = resources.files("deployer.state").joinpath("lua/_prelude.lua").read_text()
    move = r.register_script(prelude + MOVE)
    plan_id = unique()
    statuses = [s for s, n in counts.items() for _ in range(n)]
    tenants = [f"t{i}" for i in range(len(statuses))]
    config = json.dumps({"tenantId": "x"})
    store.create_plan(plan_id, [TaskRow(t, 1, config) for t in tenants], 10, "run-")
    if fields:
        r.hset(keys.plan(plan_id), mapping=fields)
    for tenant, status in zip(tenants, statuses, strict=True):
        if status != "PENDING":
            move(keys=[keys.task(task_id_for(plan_id, tenant)), keys.plan(plan_id)], args=[status])
    first = [keys.task(task_id_for(plan_id, tenants[0])), keys.plan(plan_id)]
    move(keys=first, args=["PAUSED" if statuses[0] != "PAUSED" else "PENDING"])
    move(keys=first, args=[statuses[0]])
    assert r.hget(keys.plan(plan_id), "status") == expected
