"""Invalid plans are rejected whole: a field-level record in deployer:rejections, nothing else."""

from __future__ import annotations

import json

import pytest

from tests.helpers import bg_tenant, plan, unique, wait_for


def rejection_for(r, plan_id):
    for _id, fields in r.xrange("deployer:rejections"):
        if fields["planId"] == plan_id:
            return fields
    return None


def leftovers(r, plan_id, tenants):
    found = [k for k in r.scan_iter(f"deployer:plan:{plan_id}*")]
    for t in tenants:
        found += [
            k
            for k in (
                f"deployer:tenant:{t}",
                f"deployer:task:task-{plan_id}_{t}",
                f"icc_ai_ops_srv:tenant_config:{t}",
            )
            if r.exists(k)
        ]
    found += [f["type"] for _, f in r.xrange("deployer:events") if f.get("planId") == plan_id]
    return found


@pytest.mark.parametrize(
    ("broken", "field"),
    [
        ({"tenantId": None}, "tenants[1].tenantId"),
        ({"planVersion": "v20"}, "tenants[1].planVersion"),
        ({"deployUnitName": None}, "tenants[1].deployUnitName"),
        ({"networkEndpoints": "r1"}, "tenants[1].networkEndpoints"),
    ],
)
def test_one_bad_tenant_rejects_the_whole_plan_and_leaves_nothing(worker, r, broken, field):
    plan_id = unique()
    good, bad = unique("t"), unique("t")
    payload = plan(plan_id, [bg_tenant(good), bg_tenant(bad, **broken)])
    worker.send_task("deployer.submit_plan", [payload])
    record = wait_for(lambda: rejection_for(r, plan_id), what="rejection record")
    errors = json.loads(record["errors"])
    assert record["code"] == "PLAN_INVALID"
    assert field in [e["field"] for e in errors] and all(e["reason"] for e in errors)
    assert leftovers(r, plan_id, [good, bad]) == []


def test_duplicate_tenants_are_rejected(worker, r):
    plan_id, tenant = unique(), unique("t")
    worker.send_task("deployer.submit_plan", [plan(plan_id, [bg_tenant(tenant)] * 2)])
    record = wait_for(lambda: rejection_for(r, plan_id), what="rejection record")
    assert "duplicate" in record["errors"]
    assert leftovers(r, plan_id, [tenant]) == []


def test_a_json_string_plan_is_accepted(worker, r):
    plan_id = unique()
    worker.send_task("deployer.submit_plan", [json.dumps(plan(plan_id, [bg_tenant(unique("t"))]))])
    wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED", what="done")
