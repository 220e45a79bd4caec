"""Plans at the edge: validated whole, tenant by tenant, into field errors or rows to store.

Every way a plan arrives (the submit task, the CLI, `deployer.client` callers in any
language through the broker) comes through `validate_plan`, so a plan is rejected whole with
`[{field, reason}]` before anything is written, and accepted only if every tenant's stages
can be built. The checks are strict (deployer.models.EdgeModel): exact JSON types, camelCase
names only, no unknown field, no duplicate key in a plan sent as JSON text.

A refused plan keeps whatever planId could be read, even when it was refused before it
was parsed (too large, too deep, not JSON), so the refusal reaches the caller waiting for
it. The field errors kept are capped (`Settings.max_rejection_errors`, plus the count).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pydantic import ValidationError

from deployer.errors import PlanTooDeep, PlanTooLarge, PlanValidationError
from deployer.jsonshape import Shape, json_shape
from deployer.models import (
    MAX_VERSION,
    NetworkEndpoint,
    Plan,
    PlanHead,
    TenantConfig,
    is_id,
    tenant_conflict,
)
from deployer.settings import Settings
from deployer.state.store import TaskRow
from deployer.strategy import strategy_errors
from deployer.text import encodable
from stages import registry
from stages.base import ConfigError
from stages.discovery import Resolver
from stages.factory import forward_stages

T = TypeVar("T")
_VALUE_ERROR = re.compile(r"^(?:Value error, )?([\w\[\].]+): (.*)$", re.S)
#: How far into a plan's text a planId is looked for when the plan cannot be parsed.
SNIFF_BYTES = 64 * 1024
_PLAN_ID_TEXT = re.compile(
    r'"planId"\s*:\s*(?:"([A-Za-z0-9][A-Za-z0-9_.\-]{0,127})"|([0-9]{1,19}))(?=\s*[,}])'
)


def readable_plan_id(value: Any) -> str | None:
    """`value` as a planId if it is one (a valid id, or a Java Long), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_VERSION:
        return str(value)
    return value if is_id(value) else None


def sniff_plan_id(payload: Any) -> str | None:
    """The planId a refusal is recorded under, read cheaply: the top-level key of an
    object (as the caller wrote it, when short: a caller waiting on an invalid id still
    gets its answer), or the first valid `"planId": ...` in the first SNIFF_BYTES of a text
    that could not be parsed."""
    if isinstance(payload, dict):
        value = payload.get("planId")
        if isinstance(value, str) and 0 < len(value) <= 128:
            return encodable(value)
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(payload, bytes | bytearray):
        payload = bytes(payload[:SNIFF_BYTES]).decode("utf-8", errors="replace")
    if isinstance(payload, str):
        m = _PLAN_ID_TEXT.search(payload, 0, SNIFF_BYTES)
        if m:
            return m.group(1) or readable_plan_id(int(m.group(2)))
    return None


class DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads' object hook: a key given twice is an error, not "the last one wins"."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(f"duplicate key {json.dumps(key)[:80]} in an object")
            seen.add(key)
    return obj


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


#: Every name a plan may use, for "did you mean" on an unknown one.
WIRE_NAMES = sorted(
    {
        str(info.alias or name)
        for model in (PlanHead, TenantConfig, NetworkEndpoint)
        for name, info in model.model_fields.items()
    }
)


def _unknown_field(loc: tuple[int | str, ...]) -> str:
    name = str(loc[-1]) if loc else ""
    close = difflib.get_close_matches(name, WIRE_NAMES, n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown field (not part of the plan format, see `deployer schema`){hint}"


def field_errors(exc: ValidationError, prefix: tuple[int | str, ...] = ()) -> list[dict[str, str]]:
    """pydantic errors as [{field, reason}] with wire (camelCase) paths under `prefix`."""
    errors = []
    for err in exc.errors(include_url=False, include_input=False):
        field, reason = _loc((*prefix, *err["loc"])), str(err["msg"])
        if err["type"] == "extra_forbidden":
            reason = _unknown_field(err["loc"])
        m = _VALUE_ERROR.match(reason)
        if m and not field:
            field, reason = m.group(1), m.group(2)
        elif reason.startswith("Value error, "):
            reason = reason[len("Value error, ") :]
        errors.append({"field": field or "(plan)", "reason": reason})
    return errors


def _nested(plan_id: str | None) -> PlanValidationError:
    return PlanTooDeep(
        "plan nested too deeply",
        [{"field": "(plan)", "reason": "nested too deeply"}],
        plan_id=plan_id,
    )


def shape_refusal(
    shape: Shape, settings: Settings, plan_id: str | None
) -> PlanValidationError | None:
    """The refusal of a plan's text of this shape (too deep, too many values), or None:
    the bounds a plan sent as an object meets in the worker's guard (tasks/guard.py), so
    the CLI's dry run, the HTTP API and the worker agree."""
    depth, elements = settings.max_message_depth, settings.max_message_elements
    if shape.depth > depth:
        return _nested(plan_id)
    if shape.elements > elements:
        return PlanTooLarge(
            "plan too large",
            [{"field": "(plan)", "reason": f"more than {elements} JSON values"}],
            plan_id=plan_id,
        )
    return None


def _measure(text: str, settings: Settings, raw: Any) -> None:
    """Refuse a plan's text before it is parsed when parsing would nest too deep or build
    too many values."""
    depth, elements = settings.max_message_depth, settings.max_message_elements
    shape = json_shape(text, stop_depth=depth, stop_elements=elements)
    refusal = shape_refusal(shape, settings, None)
    if refusal is not None:
        refusal.plan_id = sniff_plan_id(raw)
        raise refusal


def _plan_object(payload: Any, settings: Settings) -> dict[str, Any]:
    """The payload as a JSON object within the size limits, or PlanValidationError.

    A plan sent as JSON text is parsed with duplicate keys refused. One sent as an object
    went through the broker's JSON decoder first (kombu), where a duplicate key already
    collapsed to its last value: that cannot be detected here any more.
    """
    raw = payload
    if isinstance(payload, bytes | bytearray):
        payload = payload.decode("utf-8", errors="replace")
    if isinstance(payload, str):
        if len(payload) > settings.max_plan_bytes:
            raise PlanTooLarge(
                "plan too large",
                [{"field": "(plan)", "reason": f"larger than {settings.max_plan_bytes} bytes"}],
                plan_id=sniff_plan_id(payload),
            )
        text = payload
        _measure(text, settings, raw)
        try:
            payload = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except RecursionError:
            raise _nested(sniff_plan_id(raw)) from None
        except DuplicateKey as exc:
            raise PlanValidationError(
                "plan has a duplicate key",
                [{"field": "(plan)", "reason": str(exc)}],
                plan_id=sniff_plan_id(raw),
            ) from None
        except ValueError as exc:
            raise PlanValidationError(
                "plan is not JSON",
                [{"field": "(plan)", "reason": f"not valid JSON: {exc}"}],
                plan_id=sniff_plan_id(raw),
            ) from None
    if not isinstance(payload, dict):
        raise PlanValidationError(
            "plan must be a JSON object",
            [{"field": "(plan)", "reason": f"expected an object, got {type(payload).__name__}"}],
        )
    tenants = payload.get("tenants")
    if isinstance(tenants, list) and len(tenants) > settings.max_tenants_per_plan:
        raise PlanTooLarge(
            "too many tenants",
            [{"field": "tenants", "reason": f"more than {settings.max_tenants_per_plan}"}],
            plan_id=sniff_plan_id(payload),
        )
    return payload


class _Errors:
    """Field errors of one plan: the first `limit` kept, all of them counted.

    A 100,000-tenant plan with four bad fields per tenant made 400,000 errors, a 45 MB
    rejection entry and as much in the submitting worker; the caller needs the first few.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.kept: list[dict[str, str]] = []

    def add(self, errors: Iterable[dict[str, str]]) -> None:
        for error in errors:
            self.count += 1
            if len(self.kept) < self.limit:
                self.kept.append(error)


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
    plan_id = sniff_plan_id(data)
    errors = _Errors(settings.max_rejection_errors)
    head: PlanHead | None = None
    try:
        head = PlanHead.model_validate(data, by_name=False)
    except ValidationError as exc:
        errors.add(field_errors(exc))
    except RecursionError:
        raise _nested(plan_id) from None
    tenants = data.get("tenants")
    kept: list[T] = []
    seen: set[str] = set()
    for i, raw in enumerate(tenants if isinstance(tenants, list) else ()):
        try:
            config = TenantConfig.model_validate(raw, by_name=False)
        except ValidationError as exc:
            errors.add(field_errors(exc, ("tenants", i)))
            continue
        except RecursionError:
            raise _nested(plan_id) from None
        conflict = tenant_conflict(i, config, head.plan_id, seen) if head else None
        if conflict:
            field, reason = conflict.split(": ", 1)
            errors.add([{"field": field, "reason": reason}])
            continue
        try:
            kept.append(keep(config))
        except ConfigError as exc:
            errors.add([{"field": f"tenants[{i}].{exc.field}", "reason": exc.reason}])
    if head is not None:
        errors.add(strategy_errors(head.strategy, seen, len(seen), settings.gates))
    if errors.count or head is None:
        raise PlanValidationError(
            f"plan rejected: {errors.count} field error(s)",
            errors.kept,
            plan_id=plan_id,
            error_count=errors.count,
        )
    return head, kept


def plan_digest(head: PlanHead, config_jsons: Iterable[str]) -> str:
    """sha256 of a validated plan in canonical form: its head (planId, maxConcurrency,
    strategy) and each tenant's config as stored, in order.

    Whatever the caller's key order, JSON text or object, numeric or string planId, or
    `sourceTenantDeployConfig` for `previousConfig`, the same plan has the same digest;
    kept in the plan hash, it tells an identical resubmit (a no-op) from a reused planId
    with another body (PLAN_CONFLICT).
    """
    # the contract version says how to read the plan, not what it is: a plan with and
    # without `contractVersion: 1` is the same plan
    fields = head.model_dump(mode="json", by_alias=True, exclude_none=True,
                             exclude={"tenants", "contract_version"})  # fmt: skip
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())
    for config_json in config_jsons:
        digest.update(b"\n")
        digest.update(config_json.encode())
    return digest.hexdigest()


def config_json(config: TenantConfig) -> str:
    """A tenant's config as stored (and digested): wire names, no nulls."""
    return config.model_dump_json(by_alias=True, exclude_none=True)


def parse_plan(payload: Any, settings: Settings) -> Plan:
    """Validate a whole plan (not its stages) or raise PlanValidationError listing every
    field error."""
    head, tenants = validate_plan(payload, settings, lambda config: config)
    return Plan.model_construct(
        plan_id=head.plan_id,
        contract_version=head.contract_version,
        max_concurrency=head.max_concurrency,
        tenants=tenants,
    )


def task_row(config: TenantConfig, settings: Settings) -> TaskRow:
    """What the store keeps of a submitted tenant. Building its stages validates them (a
    config the factory cannot turn into stages rejects the plan); they are built again,
    for keeps, when the task is first sent."""
    return task_row_and_services(config, settings)[0]


def task_row_and_services(config: TenantConfig, settings: Settings) -> tuple[TaskRow, list[str]]:
    """`task_row` and the services whose instances its stages call (for `preflight`): a
    stage that only writes Redis needs no instance."""
    stages = forward_stages(config, settings)
    row = TaskRow(config.tenant_id, len(stages), config_json(config))
    calling = [
        stage.service
        for stage in stages
        if any(registry.step(step.type).calls_instances for step in stage.steps)
    ]
    return row, calling


def preflight(
    plan_id: str, services: dict[tuple[str, str | None], int], resolver: Resolver
) -> None:
    """Refuse a plan using a service that has no instance, before anything is written.

    Found only at its stage, the missing service used to fail tenants after their earlier
    stages had acted. `services` maps each (service, Nacos namespace) the plan uses to the
    first tenant using it: one lookup per pair, never per tenant (a 10,000-tenant plan in
    one namespace costs at most four lookups). The stage still checks again when it runs.
    """
    errors = []
    for (service, namespace), index in services.items():
        try:
            found = resolver.resolve(service, namespace)
        except Exception as exc:  # a registry failure is a refusal, not a crash
            found, why = [], f" ({type(exc).__name__})"
        else:
            why = ""
        if not found:
            errors.append(
                {
                    "field": f"tenants[{index}]",
                    "reason": f"uses {service}: no instance available in namespace "
                    f"{namespace or 'default'}{why}; configure DEPLOYER_INSTANCES or Nacos",
                }
            )
    if errors:
        raise PlanValidationError(
            f"plan refused: {len(errors)} service(s) without instances", errors, plan_id=plan_id
        )


def plan_schema(settings: Settings | None = None) -> dict[str, Any]:
    """The JSON Schema of a plan (`deployer schema`), generated from the models that
    validate it: validation mode, wire (camelCase) names, no unknown field, the id and
    path patterns. What a schema cannot say is checked by `validate_plan` only: tenant ids
    unique, a tenant's planId equal to the plan's, stages buildable, instances available,
    no duplicate key, integers written without a fraction (JSON Schema reads 20.0 as 20).
    """
    schema = Plan.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    if settings is not None:
        schema["properties"]["tenants"]["maxItems"] = settings.max_tenants_per_plan
    return schema
