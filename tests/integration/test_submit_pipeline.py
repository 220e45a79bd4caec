"""A plan submitted by task name runs to COMPLETED through the in-process worker."""

from __future__ import annotations

import json

from tests.helpers import bg_tenant, plan, unique, wait_for


def test_plan_submitted_by_name_completes_with_data_and_metadata(worker, r):
    plan_id = unique()
    worker.send_task(
        "deployer.submit_plan", [plan(plan_id, [bg_tenant(f"{plan_id}-t{i}") for i in range(3)])]
    )
    wait_for(
        lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED", what="plan COMPLETED"
    )
    for i in range(3):
        tenant = f"{plan_id}-t{i}"
        data = r.hgetall(f"icc_ai_ops_srv:tenant_config:{tenant}")
        assert set(data) == {"icc-bg-gateway", "metadata"}
        assert json.loads(data["metadata"]) == {"version": 20}
        assert data["metadata"] == '{"version":20}'
        assert json.loads(data["icc-bg-gateway"]) == {
            "tenantId": tenant,
            "sourceUnitName": "blue",
            "targetUnitName": "green",
            "routes": [{"id": "r1", "sourceUri": "10.0.0.1", "targetUri": "gw.green.example"}],
        }
