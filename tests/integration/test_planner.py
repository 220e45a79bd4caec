"""The planner against a real Redis: plans stored as configs, runs built as slots send them.

Chains are "sent" into a list: what matters here is what is stored and what would be sent.
"""

from __future__ import annotations

import json

import pytest
import redis

from deployer import planner as planner_module
from deployer.planner import Planner
from deployer.redis_client import client_for
from deployer.settings import Settings
from deployer.store import Dispatch, Store
from tests.helpers import bg_tenant, plan, unique


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
        task = r.hgetall(f"deployer:task:task-{plan_id}_{tenant['tenantId']}")
        assert json.loads(task["config"])["planVersion"] == 40 + i
        assert task["status"] == "PENDING" and task["totalStages"] == "1"
        if i < 2:  # sent: its run and context are stored as they left
            d = wave[i]
            assert json.loads(task["run"]) == d.run.model_dump(mode="json", by_alias=True)
            assert json.loads(task["ctx"])["additionalData"] == {"planVersion": 40 + i}
            assert d.context.token == task["token"] and d.run.run_id == task["runId"]
        else:
            assert "run" not in task and "ctx" not in task
    run_ids = {r.hget(f"deployer:task:task-{plan_id}_{t['tenantId']}", "runId") for t in tenants}
    assert len(run_ids) == 5


def test_a_big_uncapped_plan_is_sent_in_bounded_batches_each_task_once(
    planner, sent, monkeypatch
):
    monkeypatch.setattr(planner_module, "DISPATCH_BATCH", 40)
    plan_id = unique()
    tenants = [bg_tenant(f"{plan_id}-t{i}") for i in range(100)]
    assert planner.submit(plan(plan_id, tenants, maxConcurrency=1000))["tasks"] == 100
    assert [len(batch) for batch in sent] == [40, 40, 20]
    ids = [d.task_id for batch in sent for d in batch]
    assert len(set(ids)) == 100


def test_a_resubmission_sends_nothing_twice(planner, sent):
    plan_id = unique()
    payload = plan(plan_id, [bg_tenant(f"{plan_id}-t{i}") for i in range(3)], maxConcurrency=2)
    planner.submit(payload)
    assert planner.submit(payload)["code"] == "ALREADY_SUBMITTED"
    assert [len(batch) for batch in sent] == [2]  # the slots are taken: nothing more to send
