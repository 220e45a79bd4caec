"""Test helpers: waiting on conditions with deadlines (never bare sleeps), sample plans."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `condition` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T = condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)
        last = condition()
    return last


def unique(prefix: str = "plan") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def bg_tenant(
    tenant_id: str, version: int | None = 20, prev_version: int | None = 19, **extra: Any
) -> dict[str, Any]:
    """A TenantConfig (Java wire shape) that needs only the blue-green-gateway stage."""
    cfg: dict[str, Any] = {
        "tenantId": tenant_id,
        "deployUnitName": "green",
        "networkEndpoints": [
            {"key": "r1", "sourceIp": "10.0.0.1", "targetDomain": "gw.green.example"}
        ],
        "serviceNames": ["blue-green-gateway"],
    }
    if version is not None:
        cfg["planVersion"] = version
    if prev_version is not None:
        cfg["sourceTenantDeployConfig"] = {
            "tenantId": tenant_id,
            "planVersion": prev_version,
            "deployUnitName": "blue",
            "networkEndpoints": [
                {"key": "r1", "sourceIp": "10.0.0.1", "targetDomain": "gw.blue.example"}
            ],
        }
    cfg.update(extra)
    return cfg


def plan(plan_id: str, tenants: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"planId": plan_id, "tenants": tenants, **extra}


def task_rows(payload: dict[str, Any], settings: Any) -> tuple[str, list[Any]]:
    """(plan id, the rows the store keeps per task) of a valid plan: what submit writes."""
    from deployer.intake import task_row, validate_plan

    head, rows = validate_plan(payload, settings, lambda config: task_row(config, settings))
    return head.plan_id, rows
