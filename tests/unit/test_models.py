"""Wire format: the Java TenantDeployConfig JSON is accepted as is; bad input names its field."""

from __future__ import annotations

import pytest

from deployer.errors import PlanValidationError
from deployer.intake import parse_plan
from deployer.models import RunKind, TenantConfig
from deployer.planner import initial_context
from deployer.settings import Settings
from tests.helpers import bg_tenant, plan

SETTINGS = Settings()


def errors_of(payload: object) -> list[dict[str, str]]:
    with pytest.raises(PlanValidationError) as info:
        parse_plan(payload, SETTINGS)
    return info.value.errors


def test_java_shape_is_accepted_with_numeric_plan_id_and_source_snapshot():
    parsed = parse_plan({"planId": 42, "tenants": [bg_tenant("t1", planId=42)]}, SETTINGS)
    tenant = parsed.tenants[0]
    assert parsed.plan_id == "42" and tenant.plan_id == "42"
    assert tenant.previous_config is not None and tenant.previous_config.plan_version == 19


def test_previous_config_alias_is_accepted_but_not_both():
    cfg = bg_tenant("t1")
    cfg["previousConfig"] = cfg.pop("sourceTenantDeployConfig")
    assert TenantConfig.model_validate(cfg).previous_config is not None
    cfg["sourceTenantDeployConfig"] = cfg["previousConfig"]
    errors = errors_of(plan("p", [cfg]))
    assert "not both" in errors[0]["reason"]


def test_null_network_endpoints_is_an_empty_list_not_a_crash():
    cfg = bg_tenant("t1", networkEndpoints=None)
    assert TenantConfig.model_validate(cfg).network_endpoints == []


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda p: p["tenants"][0].pop("tenantId"), "tenants[0].tenantId"),
        (lambda p: p["tenants"][0].update(planVersion="twenty"), "tenants[0].planVersion"),
        (lambda p: p["tenants"][0].update(tenantId="a b"), "tenants[0].tenantId"),
        (lambda p: p["tenants"][0].update(tenantId="x:*"), "tenants[0].tenantId"),
        (lambda p: p["tenants"][0].update(planVersion=-1), "tenants[0].planVersion"),
        (lambda p: p["tenants"].append(dict(p["tenants"][0])), "tenants[1].tenantId"),
        (lambda p: p["tenants"][0].update(planId="other"), "tenants[0].planId"),
        (lambda p: p.update(tenants=[]), "tenants"),
        (
            lambda p: p["tenants"][0]["networkEndpoints"][0].pop("targetDomain"),
            "tenants[0].networkEndpoints[0]",
        ),
        (
            lambda p: p["tenants"][0].update(healthCheckPath="http://evil.example/"),
            "tenants[0].healthCheckPath",
        ),
    ],
)
def test_invalid_input_is_rejected_with_the_field_named(mutate, field):
    payload = plan("p", [bg_tenant("t1")])
    mutate(payload)
    errors = errors_of(payload)
    assert field in [e["field"] for e in errors], errors


@pytest.mark.parametrize("payload", ["not json", "[1,2]", 7, None])
def test_non_object_plans_are_rejected(payload):
    assert errors_of(payload)[0]["field"] == "(plan)"


def test_plan_version_is_put_into_the_context_at_creation():
    cfg = TenantConfig.model_validate(bg_tenant("t1", version=123))
    ctx = initial_context("p", "task-p_t1", cfg, RunKind.FORWARD, "run")
    assert ctx.additional_data == {"planVersion": 123} and ctx.plan_version == 123
    cfg = TenantConfig.model_validate(bg_tenant("t1", version=None))
    assert initial_context("p", "task-p_t1", cfg, RunKind.FORWARD, "run").plan_version is None
