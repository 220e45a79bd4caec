# ruff: noqa: E501  (a table: one case per line reads better than wrapped)
"""Plans at the edge, as a table: what is accepted, what is refused with which code, field and
reason. Shared by the validator test, the worker test and the schema test, so the three can
never drift apart.

A case's `plan(plan_id)` builds the payload for a fresh plan id; `schema` says whether the
JSON Schema can express the outcome (False: only `validate_plan` can, e.g. stages, 20.0).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.helpers import bg_tenant, plan


@dataclass(frozen=True)
class Case:
    name: str
    plan: Callable[[str], Any]
    #: None: accepted; else (code, field, a substring of the reason)
    refused: tuple[str, str, str] | None = None
    schema: bool = True
    #: The planId the refusal is recorded under ("" when the plan's own id is unreadable).
    recorded_id: Callable[[str], str] = lambda plan_id: plan_id


def tenant_with(**fields: Any) -> Callable[[str], dict[str, Any]]:
    def build(plan_id: str) -> dict[str, Any]:
        return plan(plan_id, [bg_tenant(f"{plan_id}-t0", **fields)])

    return build


def head_with(**fields: Any) -> Callable[[str], dict[str, Any]]:
    def build(plan_id: str) -> dict[str, Any]:
        return {**plan(plan_id, [bg_tenant(f"{plan_id}-t0")]), **fields}

    return build


def java_full(plan_id: str) -> dict[str, Any]:
    """Every field of the Java TenantDeployConfig (docs/contracts.md §1), nulls included as
    Jackson writes them, and a numeric planId in the tenant as the Java Long."""
    numeric = int(plan_id.rsplit("-", 1)[1], 16)
    tenant = {
        "deployUnitId": 7,
        "deployUnitVersion": 3,
        "deployUnitName": "green",
        "networkEndpoints": [
            {"key": "r1", "value": None, "sourceIp": "10.0.0.1", "sourceDomain": None,
             "targetIp": None, "targetDomain": "gw.green.example"},
        ],
        "nacosNameSpace": None,
        "defaultFlag": False,
        "tenantId": f"t-{numeric}",
        "calledNumberRules": "1001,1002",
        "trunkGroup": "tg-1",
        "planId": numeric,
        "planVersion": 20,
        "sourceTenantDeployConfig": {
            "deployUnitId": 6, "deployUnitVersion": 2, "deployUnitName": "blue",
            "networkEndpoints": None, "nacosNameSpace": None, "defaultFlag": None,
            "tenantId": f"t-{numeric}", "calledNumberRules": None, "trunkGroup": None,
            "planId": numeric, "planVersion": 19, "sourceTenantDeployConfig": None,
            "serviceNames": None,
        },
        "serviceNames": None,
    }  # fmt: skip
    return {"planId": numeric, "tenants": [tenant]}


def previous_alias(plan_id: str) -> dict[str, Any]:
    cfg = bg_tenant(f"{plan_id}-t0")
    cfg["previousConfig"] = cfg.pop("sourceTenantDeployConfig")
    return plan(plan_id, [cfg])


def both_previous(plan_id: str) -> dict[str, Any]:
    cfg = bg_tenant(f"{plan_id}-t0")
    cfg["previousConfig"] = cfg["sourceTenantDeployConfig"]
    return plan(plan_id, [cfg])


def endpoint_with(**fields: Any) -> Callable[[str], dict[str, Any]]:
    def build(plan_id: str) -> dict[str, Any]:
        cfg = bg_tenant(f"{plan_id}-t0")
        cfg["networkEndpoints"][0].update(fields)
        return plan(plan_id, [cfg])

    return build


def snapshot_with(**fields: Any) -> Callable[[str], dict[str, Any]]:
    def build(plan_id: str) -> dict[str, Any]:
        cfg = bg_tenant(f"{plan_id}-t0")
        cfg["sourceTenantDeployConfig"].update(fields)
        return plan(plan_id, [cfg])

    return build


def portal_only(**fields: Any) -> Callable[[str], dict[str, Any]]:
    def build(plan_id: str) -> dict[str, Any]:
        cfg = {"tenantId": f"{plan_id}-t0", "planVersion": 20, **fields}
        return plan(plan_id, [cfg])

    return build


def duplicate_key(plan_id: str) -> str:
    text = json.dumps(plan(plan_id, [bg_tenant(f"{plan_id}-t0")]))
    return text.replace(
        '"deployUnitName": "green"', '"deployUnitName": "green", "deployUnitName": "blue"'
    )


def unreadable(_plan_id: str) -> str:
    return ""


INVALID = "PLAN_INVALID"
UNKNOWN = "unknown field"
NOT_INT = "valid integer"

CASES = [
    Case("java-every-field-numeric-ids", java_full),
    Case("bg-tenant", tenant_with()),
    Case("previousConfig-alias", previous_alias),
    Case("max-concurrency", head_with(maxConcurrency=5)),
    Case("strategy", head_with(strategy={"canary": 1, "waves": {"type": "exponential", "size": 1, "factor": 2}, "bakeSeconds": 0, "approval": "first", "failureBudget": {"max": "5%", "scope": "wave", "onExceed": "rollback"}})),
    Case("strategy-waves-list", head_with(strategy={"waves": [1, 10]}), (INVALID, "strategy.waves", "dictionary")),
    Case("strategy-bake-string", head_with(strategy={"bakeSeconds": "300"}), (INVALID, "strategy.bakeSeconds", NOT_INT)),
    Case("strategy-unknown-field", head_with(strategy={"canery": 2}), (INVALID, "strategy.canery", UNKNOWN)),
    Case("strategy-gate-url", head_with(strategy={"gate": "http://169.254.169.254/"}), (INVALID, "strategy.gate", "pattern")),
    Case("strategy-canary-not-in-plan", head_with(strategy={"canary": ["ghost"]}), (INVALID, "strategy.canary[0]", "not in the plan"), schema=False),
    Case("health-path", tenant_with(healthCheckPath="/actuator/bg-sdk/{tenantId}")),
    Case("nulls-as-jackson-writes-them", tenant_with(trunkGroup=None, nacosNameSpace=None)),
    # strict types: no coercion
    Case("version-string", tenant_with(planVersion="20"), (INVALID, "tenants[0].planVersion", NOT_INT)),
    Case("version-float", tenant_with(planVersion=20.0), (INVALID, "tenants[0].planVersion", NOT_INT), schema=False),
    Case("version-bool", tenant_with(planVersion=True), (INVALID, "tenants[0].planVersion", "boolean")),
    Case("concurrency-bool", head_with(maxConcurrency=True), (INVALID, "maxConcurrency", NOT_INT)),
    Case("concurrency-string", head_with(maxConcurrency="5"), (INVALID, "maxConcurrency", NOT_INT)),
    Case("flag-string", tenant_with(defaultFlag="true"), (INVALID, "tenants[0].defaultFlag", "boolean")),
    Case("unit-id-float", tenant_with(deployUnitId=7.5), (INVALID, "tenants[0].deployUnitId", NOT_INT)),
    Case("plan-id-bool", head_with(planId=True), (INVALID, "planId", "string or an integer"), recorded_id=unreadable),
    Case("plan-id-negative", head_with(planId=-1), (INVALID, "planId", "2^63-1"), recorded_id=lambda _: "-1"),
    Case("strategy-not-object", head_with(strategy="fast"), (INVALID, "strategy", "dictionary")),
    # unknown fields
    Case("password-next-to-tenants", head_with(password="hunter2"), (INVALID, "password", UNKNOWN)),
    Case("misspelled-tenant-field", tenant_with(deployUnitNmae="green"), (INVALID, "tenants[0].deployUnitNmae", "did you mean deployUnitName")),
    Case("snake-case-name", tenant_with(plan_version=20), (INVALID, "tenants[0].plan_version", UNKNOWN)),
    Case("endpoint-extra", endpoint_with(password="x"), (INVALID, "tenants[0].networkEndpoints[0].password", UNKNOWN)),
    Case("snapshot-extra", snapshot_with(apiKey="k"), (INVALID, "tenants[0].sourceTenantDeployConfig.apiKey", UNKNOWN)),
    Case("both-previous", both_previous, (INVALID, "tenants[0]", "not both")),
    # ids and paths are whole strings: no trailing newline, no control character
    Case("tenant-id-newline", tenant_with(tenantId="nl-1\n"), (INVALID, "tenants[0].tenantId", "1-128 characters")),
    Case("plan-id-newline", head_with(planId="p-1\n"), (INVALID, "planId", "1-128 characters"), recorded_id=lambda p: "p-1\n"),
    Case("path-crlf", tenant_with(healthCheckPath="/ok\r\nX-Evil: 1"), (INVALID, "tenants[0].healthCheckPath", "printable")),
    Case("path-nul", tenant_with(healthCheckPath="/a\x00b"), (INVALID, "tenants[0].healthCheckPath", "printable")),
    Case("path-tab", tenant_with(healthCheckPath="/a\tb"), (INVALID, "tenants[0].healthCheckPath", "printable")),
    Case("path-trailing-newline", tenant_with(healthCheckPath="/ok\n"), (INVALID, "tenants[0].healthCheckPath", "printable")),
    Case("path-other-host", tenant_with(healthCheckPath="//evil.example/x"), (INVALID, "tenants[0].healthCheckPath", "printable")),
    # a service named in serviceNames that the config cannot build is a field error
    Case("portal-without-unit", portal_only(serviceNames=["portal"], trunkGroup="tg"), (INVALID, "tenants[0].deployUnitName", "required by portal"), schema=False),
    Case("asbc-without-trunk", tenant_with(serviceNames=["asbc-gateway", "blue-green-gateway"]), (INVALID, "tenants[0].trunkGroup", "required by asbc-gateway"), schema=False),
    Case("bg-without-endpoints", tenant_with(networkEndpoints=[], serviceNames=["blue-green-gateway", "portal"]), (INVALID, "tenants[0].networkEndpoints", "required by blue-green-gateway"), schema=False),
    # duplicate keys in a plan sent as JSON text
    Case("duplicate-key", duplicate_key, (INVALID, "(plan)", 'duplicate key "deployUnitName"'), schema=False),
]  # fmt: skip


def by_name(*names: str) -> list[Case]:
    return [c for c in CASES if c.name in names]
