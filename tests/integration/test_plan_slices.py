"""A big plan is created in slices (short scripts) with the guarantees of one script: the same
records, invisible until complete, one creator per planId, a dead creator's leftovers
replaced."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from deployer.models import task_id_for
from deployer.planner import Planner
from deployer.redis_client import client_for
from deployer.settings import Settings
from deployer.state.store import Store
from tests.helpers import bg_tenant, plan, task_rows, unique, wait_for

SLICE = 7


@pytest.fixture()
def store(redis_url: str) -> Store:
    settings = Settings(redis_url=redis_url, plan_create_slice=SLICE)
    return Store(client_for(settings.state_url), settings)


def records(r: redis.Redis, plan_id: str) -> dict[str, object]:
    """Everything a created plan consists of, timestamps and run-id prefixes left out."""
    ids = r.lrange(f"deployer:plan:{plan_id}:tenants", 0, -1)
    tasks = []
    for task_id in ids:
        task = r.hgetall(f"deployer:task:{task_id}")
        task = {k: v for k, v in task.items() if k not in ("createdAt", "updatedAt")}
        task["runId"] = task["runId"].split("-", 1)[1]
        tasks.append(task)
    head = r.hgetall(f"deployer:plan:{plan_id}")
    head = {k: v for k, v in head.items() if k not in ("createdAt", "updatedAt", "planId")}
    prefix = task_id_for(plan_id, "")
    return {
        "ids": [i.removeprefix(prefix) for i in ids],
        "queue": r.lrange(f"deployer:plan:{plan_id}:queue", 0, -1) == ids,
        "tasks": [{**t, "taskId": t["taskId"].removeprefix(prefix), "planId": ""} for t in tasks],
        "head": head,
    }


def test_a_sliced_plan_is_stored_exactly_as_one_script_stores_it(store, redis_url, r):
    one_script = Store(client_for(redis_url), Settings(redis_url=redis_url))
    small_id, big_id = unique(), unique()
    tenants = [f"t-{unique()}" for _ in range(3 * SLICE + 2)]  # 4 slices, the last short
    for plan_id, creator in ((small_id, one_script), (big_id, store)):
        _, rows = task_rows(plan(plan_id, [bg_tenant(t) for t in tenants]), store.settings)
        assert creator.create_plan(plan_id, rows, 5, "r-", "d" * 64)
        assert not creator.create_plan(plan_id, rows, 5, "r-", "d" * 64)  # exists
    assert records(r, big_id) == records(r, small_id)
    # the tenants' latest task is the big plan's (created last), as one script would set it
    assert [r.get(f"deployer:tenant:{t}") for t in tenants] == [
        task_id_for(big_id, t) for t in tenants
    ]
    assert r.hget(f"deployer:plan:{big_id}", "total") == str(len(tenants))
    assert not r.exists(f"deployer:plan:{big_id}:creating")


def test_concurrent_creators_big_and_small_create_one_plan_from_one_payload(store, r):
    plan_id = unique()
    sizes = [3, 40, 5, 60, 2 * SLICE, 1, 33, SLICE]
    payloads = [
        task_rows(
            plan(plan_id, [bg_tenant(f"{plan_id}-t{i}", version=n) for i in range(size)]),
            store.settings,
        )  # fmt: skip
        for n, size in enumerate(sizes)
    ]
    with ThreadPoolExecutor(len(sizes)) as pool:
        created = list(
            pool.map(lambda n: store.create_plan(*payloads[n], 2, f"c{n}-"), range(len(sizes)))
        )
    assert created.count(True) == 1
    winner = created.index(True)
    ids = r.lrange(f"deployer:plan:{plan_id}:tenants", 0, -1)
    assert len(ids) == sizes[winner] == int(r.hget(f"deployer:plan:{plan_id}", "total"))
    for task_id in ids:
        task = r.hgetall(f"deployer:task:{task_id}")
        assert json.loads(task["config"])["planVersion"] == winner
        assert task["runId"].startswith(f"c{winner}-")


def test_a_creator_that_died_mid_way_left_nothing_visible_and_is_replaced(store, redis_url, r):
    plan_id = unique()
    payload = plan(plan_id, [bg_tenant(f"{plan_id}-t{i}") for i in range(3 * SLICE)])
    _, rows = task_rows(payload, store.settings)
    dead = Store(client_for(redis_url), store.settings)
    dead.claim_ttl_ms = 500
    claim = f"deployer:plan:{plan_id}:creating"
    keys = [f"deployer:plan:{plan_id}", claim] + [
        f"deployer:plan:{plan_id}:{k}" for k in ("tenants", "queue")
    ]
    assert dead._claim(keys=keys, args=["dead", 500]) == 1
    args = ["dead", 500, plan_id, 0, "deployer:task:", task_id_for(plan_id, ""), "x-", 1]
    args += ["", "", "0", 0]  # no strategy: no wave indexes, wave list prefix, waves
    for row in rows[:SLICE]:
        args += row
    assert dead._slice(keys=[claim, *keys[2:]], args=args) == 1  # then the creator dies

    # half a plan is unreachable: no plan hash, no tenant pointer
    assert r.llen(f"deployer:plan:{plan_id}:tenants") == SLICE
    assert not r.exists(f"deployer:plan:{plan_id}")
    assert not r.exists(f"deployer:tenant:{plan_id}-t0")

    # a resubmit waits for the claim to expire, then writes the whole plan
    sent: list[object] = []
    planner = Planner(store, store.settings, sent.append)
    answer = planner.submit(payload)
    assert answer["code"] == "ACCEPTED", answer
    assert r.llen(f"deployer:plan:{plan_id}:tenants") == 3 * SLICE
    first = task_id_for(plan_id, f"{plan_id}-t0")
    assert r.get(f"deployer:tenant:{plan_id}-t0") == first
    assert not r.hget(f"deployer:task:{first}", "runId").startswith("x-")
    wait_for(lambda: not r.exists(claim), what="claim released")
