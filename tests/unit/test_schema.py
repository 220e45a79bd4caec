"""`deployer schema` is generated from the models that validate: every accepted plan
validates against it, every refused one the schema can express does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from deployer.cli import app
from deployer.errors import PlanValidationError
from deployer.intake import plan_schema, task_row, validate_plan
from deployer.settings import Settings
from tests.helpers import unique
from tests.intake_cases import CASES, Case, by_name

SETTINGS = Settings()
SCHEMA = plan_schema(SETTINGS)
VALIDATOR = Draft202012Validator(SCHEMA)


def parse_plan(payload: object, settings: Settings) -> None:
    """The submit path's validation, stages included."""
    validate_plan(payload, settings, lambda config: task_row(config, settings))


def as_object(payload: object) -> object:
    return json.loads(payload) if isinstance(payload, str) else payload


def test_the_cli_prints_the_generated_schema_and_it_is_a_valid_schema():
    printed = json.loads(CliRunner().invoke(app, ["schema"]).output)
    assert printed == SCHEMA
    Draft202012Validator.check_schema(printed)


def test_the_schema_has_what_the_validator_accepts():
    tenant = SCHEMA["$defs"]["TenantConfig"]
    assert {"sourceTenantDeployConfig", "previousConfig", "healthCheckPath"} <= set(
        tenant["properties"]
    )
    assert {"type": "integer", "minimum": 0, "maximum": 2**63 - 1} in SCHEMA["properties"][
        "planId"
    ]["anyOf"]
    assert tenant["properties"]["tenantId"]["pattern"].startswith("^[A-Za-z0-9]")
    assert SCHEMA["additionalProperties"] is False and tenant["additionalProperties"] is False
    assert SCHEMA["properties"]["tenants"]["maxItems"] == SETTINGS.max_tenants_per_plan


@pytest.mark.parametrize("case", [c for c in CASES if c.refused is None], ids=lambda c: c.name)
def test_every_accepted_plan_validates_against_the_schema(case: Case):
    payload = case.plan(unique())
    parse_plan(payload, SETTINGS)  # accepted by the validator...
    errors = [e.message for e in VALIDATOR.iter_errors(as_object(payload))]
    assert errors == []  # ...and by the schema


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.refused is not None and c.schema], ids=lambda c: c.name
)
def test_every_refused_plan_fails_the_schema_too(case: Case):
    payload = case.plan(unique())
    with pytest.raises(PlanValidationError):
        parse_plan(payload, SETTINGS)
    assert not VALIDATOR.is_valid(as_object(payload))


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.refused is not None and not c.schema], ids=lambda c: c.name
)
def test_what_the_schema_cannot_say_is_still_refused_by_the_validator(case: Case):
    """The schema is a superset here (documented in intake.plan_schema): stage rules, 20.0
    (JSON Schema reads it as the integer 20), duplicate keys (gone once parsed)."""
    payload = case.plan(unique())
    with pytest.raises(PlanValidationError):
        parse_plan(payload, SETTINGS)
    assert VALIDATOR.is_valid(as_object(payload))


def test_the_demo_plan_validates_against_the_schema():
    demo = json.loads((Path(__file__).parents[2] / "examples" / "demo-plan.json").read_text())
    parse_plan(demo, SETTINGS)
    assert VALIDATOR.is_valid(demo)


json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
FIELDS = st.sampled_from(
    ["planId", "maxConcurrency", "strategy", "tenantId", "planVersion", "deployUnitId",
     "deployUnitName", "networkEndpoints", "defaultFlag", "serviceNames", "healthCheckPath",
     "previousConfig", "sourceTenantDeployConfig", "trunkGroup", "deployUnitNmae", "extra"]
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    where=st.sampled_from(["plan", "tenant", "endpoint", "snapshot"]),
    field=FIELDS,
    value=json_value | st.sampled_from(["20", 20.5, "/a\nb", "nl-1\n", "-x", "/ok", 7, True]),
)
def test_whatever_the_validator_accepts_the_schema_accepts(where, field, value):
    """Differential: the schema may be looser (what it cannot say), never stricter."""
    payload = by_name("bg-tenant")[0].plan(unique())
    target = {
        "plan": payload,
        "tenant": payload["tenants"][0],
        "endpoint": payload["tenants"][0]["networkEndpoints"][0],
        "snapshot": payload["tenants"][0]["sourceTenantDeployConfig"],
    }[where]
    target[field] = value
    try:
        parse_plan(payload, SETTINGS)
    except PlanValidationError:
        return
    assert VALIDATOR.is_valid(payload), list(VALIDATOR.iter_errors(payload))[:3]
