"""HttpRequest against the fleet's portal and ASBC endpoints (docs/contracts.md §3.1, §3.2)."""

from __future__ import annotations

import pytest

from deployer.errors import StepFailed
from deployer.fleet import Behaviour
from deployer.models import TenantConfig
from deployer.settings import Settings
from stages.base import Done, Wait
from stages.factory import build_stages
from tests.helpers import unique
from tests.stepkit import ctx_for, drive, env_for, once


def spec_of(service: str, tenant: str):
    config = TenantConfig.model_validate(
        {"tenantId": tenant, "deployUnitName": "green", "trunkGroup": "tg-1",
         "calledNumberRules": "4001,4002", "serviceNames": [service]}
    )  # fmt: skip
    (stage,) = build_stages(config, None, Settings())
    return stage.steps[0]


def test_portal_is_notified_with_tenant_target_unit_and_a_millisecond_timestamp(session_fleet):
    tenant = unique("portal")
    env = env_for(session_fleet)
    assert drive(spec_of("portal", tenant), ctx_for(env, tenant), env) == [Done()]
    (req,) = session_fleet.requests(tenant)
    assert req["service"] == "portal"
    assert req["path"] == "/icc-agent-portal/inner/v1/notify/bgSwitch"
    assert req["body"]["tenantId"] == tenant and req["body"]["targetDeployUnit"] == "green"
    assert req["body"]["timestamp"].isdigit() and len(req["body"]["timestamp"]) == 13


def test_asbc_switches_every_called_number_to_the_trunk_group(session_fleet):
    tenant = unique("asbc")
    env = env_for(session_fleet)
    assert drive(spec_of("asbc-gateway", tenant), ctx_for(env, tenant), env) == [Done()]
    (req,) = session_fleet.requests(tenant)
    assert req["body"] == {"calledNumberMatch": ["4001", "4002"], "targetTrunkGroupName": "tg-1"}


@pytest.mark.parametrize(
    ("service", "expected"),
    [("asbc-gateway", r"\$\.data\.failList not empty: .*4001"), ("portal", r"\$\.code = '1'")],
)
def test_a_business_refusal_fails_at_once_with_what_came_back(session_fleet, service, expected):
    tenant = unique("reject")
    session_fleet.behave(tenant, Behaviour(reject=True))
    env = env_for(session_fleet)
    with pytest.raises(StepFailed, match=expected):
        once(spec_of(service, tenant), ctx_for(env, tenant), env)


def test_server_errors_are_retried_then_named(session_fleet):
    tenant = unique("p500")
    session_fleet.behave(tenant, Behaviour(status=500))
    env = env_for(session_fleet, verify_max_attempts=2)
    ctx = ctx_for(env, tenant)
    spec = spec_of("portal", tenant)
    wait = once(spec, ctx, env)
    assert isinstance(wait, Wait) and "HTTP 500" in wait.progress["progress"]
    with pytest.raises(StepFailed, match=r"portal POST .* failed after 2 attempts: .* HTTP 500"):
        once(spec, ctx, env)
    assert len(session_fleet.requests(tenant)) == 2
