"""Each service's stage, built from a sample TenantConfig (pure: no I/O)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deployer.models import TenantConfig
from deployer.settings import Settings
from stages.base import ConfigError
from stages.factory import build_stages


def full_tenant(**extra: object) -> TenantConfig:
    data: dict[str, object] = {
        "tenantId": "t1",
        "planVersion": 20,
        "deployUnitId": 2,
        "deployUnitVersion": 20,
        "deployUnitName": "green",
        "nacosNameSpace": "ns1",
        "trunkGroup": "tg-green",
        "calledNumberRules": " 4001, ,4002 ",
        "networkEndpoints": [{"key": "r1", "sourceIp": "10.0.0.1", "targetDomain": "gw.green"}],
        "sourceTenantDeployConfig": {"tenantId": "t1", "planVersion": 19, "deployUnitName": "blue"},
    }
    data.update(extra)
    return TenantConfig.model_validate(data)


def stages_of(config: TenantConfig) -> dict[str, object]:
    return {s.name: s for s in build_stages(config, config.previous_config, Settings())}


def test_a_full_tenant_gets_asbc_portal_blue_green_then_ob_in_that_order():
    specs = build_stages(full_tenant(), None, Settings())
    assert [s.name for s in specs] == ["asbc-gateway", "portal", "blue-green-gateway", "ob-service"]
    assert [[st.type for st in s.steps] for s in specs] == [
        ["http-request"],
        ["http-request"],
        ["key-value-write", "broadcast", "health-check"],
        ["redis-ack"],
    ]


def test_service_names_select_services_but_never_reorder_them():
    specs = build_stages(full_tenant(serviceNames=["ob-service", "asbc-gateway"]), None, Settings())
    assert [s.name for s in specs] == ["asbc-gateway", "ob-service"]


def test_asbc_posts_the_trimmed_called_numbers_to_one_random_instance():
    (step,) = stages_of(full_tenant())["asbc-gateway"].steps
    p = step.params
    assert (p["service"], p["method"], p["path"], p["selection"]) == (
        "asbc-gateway", "POST", "/api/sbc/traffic-switch", "RANDOM",
    )  # fmt: skip
    assert p["body"] == {"calledNumberMatch": ["4001", "4002"], "targetTrunkGroupName": "tg-green"}
    assert p["expectJson"] == {"$.code": 0}
    assert p["expectEmpty"] == ["$.data.failList"]
    assert p["namespace"] == "ns1"


def test_asbc_needs_both_trunk_group_and_called_numbers():
    assert "asbc-gateway" not in stages_of(full_tenant(trunkGroup=None))
    assert "asbc-gateway" not in stages_of(full_tenant(calledNumberRules=None))
    with pytest.raises(ConfigError, match="calledNumberRules"):
        stages_of(full_tenant(calledNumberRules=" , "))


def test_portal_notifies_the_target_unit_with_a_timestamp_stamped_at_send_time():
    (step,) = stages_of(full_tenant())["portal"].steps
    p = step.params
    assert p["path"] == "/icc-agent-portal/inner/v1/notify/bgSwitch"
    assert p["body"] == {"tenantId": "t1", "targetDeployUnit": "green"}
    assert p["timestampField"] == "timestamp"
    assert p["expectJson"] == {"$.code": "0"}


def test_blue_green_writes_routes_broadcasts_and_verifies_its_own_service():
    write, broadcast, verify = stages_of(full_tenant())["blue-green-gateway"].steps
    assert write.params == {
        "field": "icc-bg-gateway",
        "value": {
            "tenantId": "t1",
            "sourceUnitName": "blue",
            "targetUnitName": "green",
            "routes": [{"id": "r1", "sourceUri": "10.0.0.1", "targetUri": "gw.green"}],
        },
    }
    assert broadcast.params == {"appName": "icc-bg-gateway"}
    assert verify.params == {"service": "blue-green-gateway", "namespace": "ns1"}


def test_a_tenant_health_path_is_used_as_a_path_on_the_configured_instances():
    verify = stages_of(full_tenant(healthCheckPath="/health/{tenantId}"))["blue-green-gateway"]
    assert verify.steps[-1].params["path"] == "/health/{tenantId}"
    for bad in ("http://evil.example/x", "//evil.example/x", "/x@evil.example", "health"):
        with pytest.raises(ValidationError):
            full_tenant(healthCheckPath=bad)


def test_ob_service_writes_ob_campaign_and_verifies_in_one_redis_ack_step():
    (step,) = stages_of(full_tenant())["ob-service"].steps
    p = step.params
    assert (step.type, step.name, p["field"], p["appName"], p["service"]) == (
        "redis-ack", "ob-redis-ack", "ob-campaign", "ob-campaign", "ob-service",
    )  # fmt: skip
    value = p["value"]
    assert set(value) == {"tenantId", "sourceUnitName", "targetUnitName", "timestamp"}
    assert (value["sourceUnitName"], value["targetUnitName"]) == ("blue", "green")
    assert isinstance(value["timestamp"], int)


def test_without_a_previous_unit_the_source_is_the_target():
    cfg = full_tenant(sourceTenantDeployConfig=None)
    (step,) = stages_of(cfg)["ob-service"].steps
    assert step.params["value"]["sourceUnitName"] == "green"


def test_a_deploy_unit_alone_gives_portal_and_ob_only():
    cfg = TenantConfig.model_validate({"tenantId": "t2", "deployUnitName": "green"})
    assert list(stages_of(cfg)) == ["portal", "ob-service"]
