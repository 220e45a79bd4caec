"""A step parameter the step type does not declare, or of the wrong type, refuses the plan
at submit (deployer:rejections, field and reason), before anything is written or run."""

from __future__ import annotations

import json

import pytest

from tests.helpers import plan, unique, wait_for
from tests.plugin_stages import FIELD, SERVICE, installed


def rejection_for(r, plan_id):
    for _id, fields in r.xrange("deployer:rejections"):
        if fields["planId"] == plan_id:
            return fields
    return None


def typo_tenant(tenant: str, kind: str) -> dict[str, object]:
    return {
        "tenantId": tenant,
        "planVersion": 20,
        "deployUnitName": kind,
        "serviceNames": [SERVICE],
    }


@pytest.mark.parametrize(
    ("kind", "field", "reason"),
    [
        ("misspelt", "params.deleteField", "not a parameter of step type key-value-write"),
        ("mistyped", "params.field", "valid string"),
    ],
)
def test_a_wrong_step_parameter_refuses_the_plan_at_submit(
    worker, r, tmp_path, kind, field, reason
):
    plan_id, tenant = unique(), unique("t")
    with installed(tmp_path):
        worker.send_task("deployer.submit_plan", [plan(plan_id, [typo_tenant(tenant, kind)])])
        record = wait_for(lambda: rejection_for(r, plan_id), what="rejection record")
    assert record["code"] == "PLAN_INVALID"
    errors = json.loads(record["errors"])
    assert len(errors) == 1
    assert errors[0]["field"] == f"tenants[0].stages[{SERVICE}].steps[typo-write].{field}"
    assert reason in errors[0]["reason"]
    assert not r.exists(f"deployer:plan:{plan_id}")
    assert not r.hexists(f"icc_ai_ops_srv:tenant_config:{tenant}", FIELD)


def test_the_same_plugin_stage_with_its_declared_parameters_runs(worker, r, tmp_path):
    plan_id, tenant = unique(), unique("t")
    with installed(tmp_path):
        worker.send_task("deployer.submit_plan", [plan(plan_id, [typo_tenant(tenant, "ok")])])
        wait_for(
            lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED",
            timeout=30,
            what="plan COMPLETED",
        )
    written = r.hgetall(f"icc_ai_ops_srv:tenant_config:{tenant}")
    assert written == {FIELD: '{"ok":true}', "metadata": '{"version":20}'}
