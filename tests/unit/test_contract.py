"""The versioned contract: docs/schema/plan.v1.json is the schema the models validate with
today, a plan may name its contract version (1) or leave it out, and any other version is a
field error rather than a plan misread."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from deployer import contract
from deployer.intake import config_json, parse_plan, plan_digest
from deployer.models import Plan
from deployer.settings import Settings
from tests.helpers import bg_tenant, plan

ROOT = Path(__file__).resolve().parents[2]


def test_the_exported_plan_schema_is_the_models_schema():
    exported = (ROOT / contract.SCHEMA_FILE).read_text(encoding="utf-8")
    assert json.loads(exported) == contract.plan_schema(), "run `make schema`"
    assert exported == contract.schema_text()  # byte for byte: the file is generated
    assert "contractVersion" in json.loads(exported)["properties"]


def test_python_m_deployer_contract_prints_the_exported_schema():
    out = subprocess.run([sys.executable, "-m", "deployer.contract"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert out == (ROOT / contract.SCHEMA_FILE).read_text(encoding="utf-8")


def test_a_plan_without_a_contract_version_is_version_1_and_the_same_plan_with_it():
    body = plan("cv-1", [bg_tenant("t-1")])
    without = parse_plan(body, Settings())
    with_it = parse_plan({**body, "contractVersion": 1}, Settings())
    assert without.contract_version is None and with_it.contract_version == 1

    def digest(p: Plan) -> str:
        return plan_digest(p, [config_json(t) for t in p.tenants])

    assert digest(without) == digest(with_it)  # a resubmit with the field is a duplicate


@pytest.mark.parametrize("version", [2, 0, "1", True])
def test_an_unknown_contract_version_is_a_field_error(version):
    body = {**plan("cv-2", [bg_tenant("t-1")]), "contractVersion": version}
    with pytest.raises(ValidationError) as caught:
        Plan.model_validate(body, strict=True)
    assert any(e["loc"][0] == "contractVersion" for e in caught.value.errors())
