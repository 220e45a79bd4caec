"""Plans at the edge: validated whole, tenant by tenant, into field errors or rows to store.

Every way a plan arrives (the submit task, the CLI, `deployer.client` callers in any
language through the broker) comes through `validate_plan`, so a plan is rejected whole with
`[{field, reason}]` before anything is written, and accepted only if every tenant's stages
can be built.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import ValidationError

from deployer.errors import PlanValidationError
from deployer.models import Plan, PlanHead, TenantConfig, tenant_conflict
from deployer.settings import Settings
from deployer.store import TaskRow
from deployer.strategy import strategy_errors
from stages.base import ConfigError
from stages.factory import forward_stages

T = TypeVar("T")
_VALUE_ERROR = re.compile(r"^(?:Value error, )?([\w\[\].]+): (.*)$", re.S)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def field_errors(exc: ValidationError, prefix: tuple[int | str, ...] = ()) -> list[dict[str, str]]:
    """pydantic errors as [{field, reason}] with wire (camelCase) paths under `prefix`."""
    errors = []
    for err in exc.errors(include_url=False, include_input=False):
        field, reason = _loc((*prefix, *err["loc"])), str(err["msg"])
        m = _VALUE_ERROR.match(reason)
        if m and not field:
            field, reason = m.group(1), m.group(2)
        elif reason.startswith("Value error, "):
            reason = reason[len("Value error, ") :]
        errors.append({"field": field or "(plan)", "reason": reason})
    return errors


def _nested() -> PlanValidationError:
    return PlanValidationError(
        "plan nested too deeply", [{"field": "(plan)", "reason": "nested too deeply"}]
    )


def _plan_object(payload: Any, settings: Settings) -> dict[str, Any]:
    """The payload as a JSON object within the size limits, or PlanValidationError."""
    if isinstance(payload, bytes | bytearray):
        payload = payload.decode("utf-8", errors="replace")
    if isinstance(payload, str):
        if len(payload) > settings.max_plan_bytes:
            raise PlanValidationError(
                "plan too large",
                [{"field": "(plan)", "reason": f"larger than {settings.max_plan_bytes} bytes"}],
            )
        try:
            payload = json.loads(payload)
        except RecursionError:
            raise _nested() from None
        except ValueError as exc:
            raise PlanValidationError(
                "plan is not JSON", [{"field": "(plan)", "reason": f"not valid JSON: {exc}"}]
            ) from None
    if not isinstance(payload, dict):
        raise PlanValidationError(
            "plan must be a JSON object",
            [{"field": "(plan)", "reason": f"expected an object, got {type(payload).__name__}"}],
        )
    tenants = payload.get("tenants")
    if isinstance(tenants, list) and len(tenants) > settings.max_tenants_per_plan:
        raise PlanValidationError(
            "too many tenants",
            [{"field": "tenants", "reason": f"more than {settings.max_tenants_per_plan}"}],
        )
    return payload


def validate_plan(
    payload: Any, settings: Settings, keep: Callable[[TenantConfig], T]
) -> tuple[PlanHead, list[T]]:
    """Validate a whole plan, one tenant at a time, keeping only `keep(tenant)` of each.

    Either every field is valid and each tenant's `keep` succeeded, or PlanValidationError
    lists every field error (a ConfigError raised by `keep` is one, under the tenant's
    path). One tenant's model lives only while `keep` runs: validating a 10,000-tenant
    plan as one `Plan` held all 10,000 (≈ 35 MB) in the submitting process at once.
    """
    data = _plan_object(payload, settings)
    errors: list[dict[str, str]] = []
    head: PlanHead | None = None
    try:
        head = PlanHead.model_validate(data)
    except ValidationError as exc:
        errors += field_errors(exc)
    except RecursionError:
        raise _nested() from None
    tenants = data.get("tenants")
    kept: list[T] = []
    seen: set[str] = set()
    for i, raw in enumerate(tenants if isinstance(tenants, list) else ()):
        try:
            config = TenantConfig.model_validate(raw)
        except ValidationError as exc:
            errors += field_errors(exc, ("tenants", i))
            continue
        except RecursionError:
            raise _nested() from None
        conflict = tenant_conflict(i, config, head.plan_id, seen) if head else None
        if conflict:
            field, reason = conflict.split(": ", 1)
            errors.append({"field": field, "reason": reason})
            continue
        try:
            kept.append(keep(config))
        except ConfigError as exc:
            errors.append({"field": f"tenants[{i}].{exc.field}", "reason": exc.reason})
    if head is not None:
        errors += strategy_errors(head.strategy, seen, len(seen), settings.gates)
    if errors or head is None:
        raise PlanValidationError(f"plan rejected: {len(errors)} field error(s)", errors)
    return head, kept


def parse_plan(payload: Any, settings: Settings) -> Plan:
    """Validate a whole plan (not its stages) or raise PlanValidationError listing every
    field error."""
    head, tenants = validate_plan(payload, settings, lambda config: config)
    return Plan.model_construct(
        plan_id=head.plan_id, max_concurrency=head.max_concurrency, tenants=tenants
    )


def task_row(config: TenantConfig, settings: Settings) -> TaskRow:
    """What the store keeps of a submitted tenant. Building its stages validates them (a
    config the factory cannot turn into stages rejects the plan); they are built again,
    for keeps, when the task is first sent."""
    stages = forward_stages(config, settings)
    return TaskRow(
        config.tenant_id, len(stages), config.model_dump_json(by_alias=True, exclude_none=True)
    )
