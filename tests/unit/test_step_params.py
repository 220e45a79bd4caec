"""Each step type declares its parameters; stages are checked against them when built."""

from __future__ import annotations

import pytest

from deployer.models import StageSpec, StepSpec, TenantConfig
from deployer.settings import Settings
from stages import registry
from stages.base import ConfigError, StepParams
from stages.factory import check_steps, forward_stages
from tests.helpers import bg_tenant


def test_every_registered_step_type_declares_its_parameters():
    for name, step in registry.steps().items():
        assert issubclass(step.Params, StepParams), name
        assert step.Params.model_config.get("extra") == "forbid", name


def test_the_stages_the_assemblers_build_have_valid_parameters():
    config = TenantConfig.model_validate(
        {**bg_tenant("t1"), "trunkGroup": "tg", "calledNumberRules": "1,2", "serviceNames": None}
    )
    stages = forward_stages(config, Settings())
    assert {s.name for s in stages} == {
        "asbc-gateway",
        "portal",
        "blue-green-gateway",
        "ob-service",
    }
    for stage in stages:
        for spec in stage.steps:
            registry.step(spec.type).parse(spec)


def stage_with(type_name: str, **params: object) -> StageSpec:
    return StageSpec(
        name="s", service="s", steps=[StepSpec(type=type_name, name="x", params=params)]
    )


@pytest.mark.parametrize(
    ("stage", "field", "reason"),
    [
        (
            stage_with("http-request", service="portal", path="/p", expectJsn={"$.code": 0}),
            "stages[s].steps[x].params.expectJsn",
            "not a parameter of step type http-request",
        ),
        (
            stage_with("broadcast", app_name="x"),  # wire (camelCase) names only
            "stages[s].steps[x].params.appName",
            "Field required",
        ),
        (
            stage_with("health-check", service="bg", selection="SOME"),
            "stages[s].steps[x].params.selection",
            "'ALL' or 'RANDOM'",
        ),
        (stage_with("no-such-step"), "stages[s].steps[x].type", "unknown step type"),
    ],
)
def test_a_wrong_parameter_is_a_field_error_when_stages_are_built(stage, field, reason):
    with pytest.raises(ConfigError) as caught:
        check_steps(stage)
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_steps_say_what_they_write_and_only_writers_delete():
    kv = StepSpec(type="key-value-write", name="w", params={"field": "f", "value": {"a": 1}})
    ack = StepSpec(
        type="redis-ack",
        name="a",
        params={"field": "g", "value": 2, "appName": "g", "service": "s"},
    )
    bc = StepSpec(type="broadcast", name="b", params={"appName": "f"})
    assert registry.step("key-value-write").writes(kv) == {"f": {"a": 1}}
    assert registry.step("redis-ack").writes(ack) == {"g": 2}
    assert registry.step("broadcast").writes(bc) == {}
    deleting = registry.step("redis-ack").deleting(ack, ["old"])
    assert deleting is not None and deleting.params["deleteFields"] == ["old"]
    assert "deleteFields" not in ack.params  # a new spec; the old one is untouched
    assert registry.step("broadcast").deleting(bc, ["old"]) is None
