"""The planner against a real Redis: plans stored as configs, runs built as slots send them.

Chains are "sent" into a list: what matters here is what is stored and what would be sent.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from deployer import planner as planner_module
from deployer.models import task_id_for
from deployer.planner import Planner
from deployer.redis_client import client_for
from deployer.settings import Settings
from deployer.state.store import Dispatch, Store
from tests.helpers import bg_tenant, plan, task_rows, unique


@pytest.fixture()
def sent() -> list[list[Dispatch]]:
    return []


@pytest.fixture()
def planner(redis_url: str, sent: list[list[Dispatch]]) -> Planner:
    settings = Settings(redis_url=redis_url)
    return Planner(Store(client_for(settings.state_url), settings), settings, sent.append)


def test_tasks_beyond_the_first_wave_are_stored_as_configs_only(planner, sent, r: redis.Redis):
    plan_id = unique()
    tenants = [bg_tenant(f"{plan_id}-t{i}", version=40 + i) for i in range(5)]
    assert planner.submit(plan(plan_id, tenants, maxConcurrency=2))["code"] == "ACCEPTED"
    (wave,) = sent
    assert [d.context.tenant_id for d in wave] == [f"{plan_id}-t0", f"{plan_id}-t1"]
    for i, tenant in enumerate(tenants):
        task = r.hgetall(f"deployer:task:{task_id_for(plan_id, tenant['tenantId'])}")
        assert json.loads(task["config"])["planVersion"] == 40 + i
        assert task["status"] == "PENDING" and task["totalStages"] == "1"
        if i < 2:  # sent: its run and context are stored as they left
            d = wave[i]
            assert json.loads(task["run"]) == d.run.model_dump(mode="json", by_alias=True)
            assert json.loads(task["ctx"])["additionalData"] == {"planVersion": 40 + i}
            assert d.context.token == task["token"] and d.run.run_id == task["runId"]
        else:
            assert "run" not in task and "ctx" not in task
    run_ids = {
        r.hget(f"deployer:task:{task_id_for(plan_id, t['tenantId'])}", "runId") for t in tenants
    }
    assert len(run_ids) == 5


def test_a_big_uncapped_plan_is_sent_in_bounded_batches_each_task_once(planner, sent, monkeypatch):
    """A small first batch (its stages start at once), then bounded ones."""
    monkeypatch.setattr(planner_module, "DISPATCH_BATCH", 40)
    monkeypatch.setattr(planner_module, "FIRST_DISPATCH_BATCH", 10)
    plan_id = unique()
    tenants = [bg_tenant(f"{plan_id}-t{i}") for i in range(100)]
    assert planner.submit(plan(plan_id, tenants, maxConcurrency=1000))["tasks"] == 100
    assert [len(batch) for batch in sent] == [10, 40, 40, 10]
    ids = [d.task_id for batch in sent for d in batch]
    assert len(set(ids)) == 100


def test_a_resubmission_sends_nothing_twice(planner, sent):
    plan_id = unique()
    payload = plan(plan_id, [bg_tenant(f"{plan_id}-t{i}") for i in range(3)], maxConcurrency=2)
    planner.submit(payload)
    assert planner.submit(payload)["code"] == "ALREADY_SUBMITTED"
    assert [len(batch) for batch in sent] == [2]  # the slots are taken: nothing more to send


def test_a_plan_is_created_whole_and_in_order(planner, r):
    plan_id = unique()
    tenants = [bg_tenant(f"{plan_id}-t{i}") for i in range(1203)]  # crosses the 1,000 slices
    assert planner.store.create_plan(*task_rows(plan(plan_id, tenants), planner.settings), 2, "z-")
    ids = [task_id_for(plan_id, t["tenantId"]) for t in tenants]
    assert r.lrange(f"deployer:plan:{plan_id}:tenants", 0, -1) == ids
    assert r.lrange(f"deployer:plan:{plan_id}:queue", 0, -1) == ids
    run_ids = [r.hget(f"deployer:task:{i}", "runId") for i in ids]
    assert run_ids == [f"z-{n:x}" for n in range(1, 1204)]
    assert [r.get(f"deployer:tenant:{t['tenantId']}") for t in tenants] == ids
    assert r.hget(f"deployer:plan:{plan_id}", "c:PENDING") == "1203"


def test_concurrent_creators_of_one_plan_create_it_once_from_one_payload(planner, r):
    """Two different payloads under one plan id at once: one of them, whole."""
    plan_id = unique()
    payloads = [
        task_rows(
            plan(plan_id, [bg_tenant(f"{plan_id}-t{i}", version=n) for i in range(300)]),
            planner.settings,
        )
        for n in range(8)
    ]
    with ThreadPoolExecutor(8) as pool:
        created = list(
            pool.map(lambda n: planner.store.create_plan(*payloads[n], 2, f"c{n}-"), range(8))
        )
    assert created.count(True) == 1
    winner = created.index(True)
    assert r.llen(f"deployer:plan:{plan_id}:tenants") == 300
    for i in range(300):
        task = r.hgetall(f"deployer:task:{task_id_for(plan_id, f'{plan_id}-t{i}')}")
        assert json.loads(task["config"])["planVersion"] == winner
        assert task["runId"].startswith(f"c{winner}-")
