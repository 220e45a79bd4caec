"""The API's OpenAPI document is complete enough to generate a client from: every operation
documents a 2xx answer with a schema, refusals their `{ok, code, message}` body, and a
standard generator (datamodel-code-generator) turns `/openapi.json` into models that import
and read the live answers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployer.settings import Settings
from deployer.web import create_app

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return create_app(Settings()).openapi()


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def test_every_operation_documents_a_2xx_answer_with_a_schema(spec):
    ops = operations(spec)
    assert len(ops) >= 14  # plans, tasks, commands, events, operations
    missing = []
    for path, method, op in ops:
        answers = {code: r for code, r in op["responses"].items() if code.startswith("2")}
        schemas = [
            media.get("schema") for r in answers.values() for media in r.get("content", {}).values()
        ]
        if not any(schemas):
            missing.append(f"{method.upper()} {path}")
    assert not missing, missing


def test_json_answers_name_their_model_and_refusals_their_problem_body(spec):
    for path, method, op in operations(spec):
        for code, answer in op["responses"].items():
            content = answer.get("content", {}).get("application/json")
            if content is None:
                continue
            schema = content["schema"]
            assert schema, f"{method.upper()} {path} {code}"
            if code.startswith(("4", "5")):
                assert schema.get("$ref", "").endswith(("/Problem", "/CommandResult",
                                                        "/SubmitResult")), (path, code)  # fmt: skip
    names = set(spec["components"]["schemas"])
    assert {"PlanView", "TaskView", "TaskPage", "PlanPage", "CommandResult", "Problem",
            "EventPage", "WaveView", "SubmitResult"} <= names  # fmt: skip


def generate(spec: dict[str, Any], folder: Path) -> Path:
    source = folder / "openapi.json"
    source.write_text(json.dumps(spec))
    out = folder / "deployer_api_models.py"
    codegen = Path(sys.executable).parent / "datamodel-codegen"
    subprocess.run(
        [str(codegen), "--input", str(source), "--input-file-type", "openapi",
         "--output", str(out), "--output-model-type", "pydantic_v2.BaseModel",
         "--disable-timestamp"],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return out


def test_a_client_generated_from_the_live_openapi_imports_and_reads_the_answers(api, tmp_path):
    spec = httpx.get(f"{api}/openapi.json").json()
    out = generate(spec, tmp_path)
    compile(out.read_text(), str(out), "exec")
    module_spec = importlib.util.spec_from_file_location("deployer_api_models", out)
    assert module_spec is not None and module_spec.loader is not None
    generated = importlib.util.module_from_spec(module_spec)
    sys.modules["deployer_api_models"] = generated
    try:
        module_spec.loader.exec_module(generated)
        page = generated.PlanPage.model_validate(httpx.get(f"{api}/api/v1/plans").json())
        assert isinstance(page.items, list)
        health = generated.Health.model_validate(httpx.get(f"{api}/healthz").json())
        assert health.ok is True
        missing = httpx.get(f"{api}/api/v1/plans/no-such-plan")
        assert generated.Problem.model_validate(missing.json()).code == "PLAN_NOT_FOUND"
        for name in ("PlanView", "TaskView", "CommandResult", "EventPage", "TenantTasks"):
            assert hasattr(generated, name), name
    finally:
        sys.modules.pop("deployer_api_models", None)
