"""A real `celery worker` subprocess runs a plan submitted by task name from another client."""

from __future__ import annotations

import json

import pytest
from celery import Celery

from tests.helpers import bg_tenant, plan, unique, wait_for

pytestmark = pytest.mark.e2e


def test_three_tenant_plan_by_name_completes_in_a_worker_process(spawn_worker, r, redis_url):
    spawn_worker("e2e", concurrency=2)
    plan_id = unique()
    tenants = [unique("t") for _ in range(3)]
    # A bare client: no project tasks imported, only the public task name and JSON.
    client = Celery("other-service", broker=redis_url, set_as_current=False)
    client.conf.update(task_serializer="json", task_ignore_result=True)
    client.send_task(
        "deployer.submit_plan",
        [plan(plan_id, [bg_tenant(t) for t in tenants])],
        queue="deployer.control",
    )
    wait_for(
        lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED",
        timeout=60,
        what="plan COMPLETED",
    )
    for t in tenants:
        data = r.hgetall(f"icc_ai_ops_srv:tenant_config:{t}")
        assert data["metadata"] == '{"version":20}'
        assert json.loads(data["icc-bg-gateway"])["targetUnitName"] == "green"
        task = r.hgetall(f"deployer:task:{r.get(f'deployer:tenant:{t}')}")
        assert task["status"] == "COMPLETED" and task["worker"].startswith("e2e@")
