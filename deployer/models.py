"""Wire and domain models (pydantic v2): camelCase on the wire, snake_case in Python."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from deployer.specs import RunKind as RunKind  # re-exported: models is their public home
from deployer.specs import StageSpec as StageSpec
from deployer.specs import StepSpec as StepSpec
from deployer.specs import WireModel as WireModel
from deployer.strategy import Strategy

#: Ids become parts of Redis keys and URLs: no separators, wildcards or white space.
#: It ends with `(?![\s\S])` ("no character follows"), not `$`: Python's `$` also matches
#: before a trailing newline (`"nl-1\n"` passed), and this pattern is read by Python (re,
#: jsonschema's re.search) and by ECMA-262 schema validators alike. Python code checks ids
#: with `is_id` (fullmatch) all the same.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}(?![\s\S])"
_ID_RE = re.compile(ID_PATTERN)
#: A path on a configured instance (healthCheckPath): absolute, printable ASCII without
#: space, so no CR/LF or other control character can reach a request line, and nothing
#: that could name another host (`//`, `@`, a backslash).
PATH_PATTERN = r"^(?![\s\S]*(?://|@|\\))/[!-~]*(?![\s\S])"
_PATH_RE = re.compile(PATH_PATTERN)
MAX_VERSION = 2**63 - 1
MAX_TEXT = 4096


def is_id(value: object) -> bool:
    """Whether `value` is a valid plan or tenant id (the whole string, never a prefix)."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def is_safe_path(value: str) -> bool:
    """An absolute path only: never a host (`//`, `@`, `\\`), never a control character."""
    return _PATH_RE.fullmatch(value) is not None


class PlanStatus(StrEnum):
    CREATED = "CREATED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    ROLLED_BACK = "ROLLED_BACK"


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    ROLLING_BACK = "ROLLING_BACK"
    ROLLED_BACK = "ROLLED_BACK"
    ROLLBACK_FAILED = "ROLLBACK_FAILED"
    #: Not applied: the tenant was deployed by a newer task since (field `supersededBy`).
    SUPERSEDED = "SUPERSEDED"


class EdgeModel(WireModel):
    """What callers send (a plan, its tenants, their endpoints), checked at the edge.

    Strict types: `planVersion` "20" or 20.0 and `maxConcurrency` true are refused, not
    coerced. No unknown field: a misspelled `deployUnitNmae` or a `password` next to
    `tenants` is a field error rather than silently dropped. Every field of the Java
    `TenantDeployConfig` (docs/contracts.md §1) has a field here, so whatever the Java callers
    send is accepted. `deployer.intake` validates with `by_name=False`: on the wire only
    the camelCase names exist, as `deployer schema` says.
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True
    )


_ID_SCHEMA: dict[str, Any] = {"type": "string", "pattern": ID_PATTERN, "maxLength": 128}
#: Java callers send planId as a Long: an integer is accepted and becomes its decimal string.
_PLAN_ID_SCHEMA: dict[str, Any] = {
    "anyOf": [_ID_SCHEMA, {"type": "integer", "minimum": 0, "maximum": MAX_VERSION}]
}
WireId = Annotated[str, WithJsonSchema(_ID_SCHEMA)]
WirePlanId = Annotated[str, WithJsonSchema(_PLAN_ID_SCHEMA)]
WirePath = Annotated[
    str, WithJsonSchema({"type": "string", "pattern": PATH_PATTERN, "maxLength": 512})
]


def _or_null(schema: dict[str, Any]) -> None:
    """Schema of a list field that also takes null (Jackson writes an unset list as null;
    `TenantConfig._one_previous` reads it as empty)."""
    inner = {k: v for k, v in schema.items() if k not in ("default", "title")}
    for k in inner:
        del schema[k]
    schema["anyOf"] = [inner, {"type": "null"}]


def _check_id(value: str, what: str) -> str:
    if not is_id(value):
        raise ValueError(
            f"{what} must be 1-128 characters of letters, digits, '_', '.' or '-' "
            "and start with a letter or digit"
        )
    return value


class NetworkEndpoint(EdgeModel):
    """One gateway route rule, as the Java callers send it."""

    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {"anyOf": [{"required": ["sourceIp"]}, {"required": ["sourceDomain"]}]},
                {"anyOf": [{"required": ["targetIp"]}, {"required": ["targetDomain"]}]},
            ]
        }
    )

    key: str = Field(min_length=1, max_length=256)
    value: str | None = Field(None, max_length=MAX_TEXT)
    source_ip: str | None = Field(None, max_length=256)
    source_domain: str | None = Field(None, max_length=256)
    target_ip: str | None = Field(None, max_length=256)
    target_domain: str | None = Field(None, max_length=256)

    @model_validator(mode="after")
    def _both_ends(self) -> NetworkEndpoint:
        if not (self.source_ip or "").strip() and not (self.source_domain or "").strip():
            raise ValueError("one of sourceIp or sourceDomain is required")
        if not (self.target_ip or "").strip() and not (self.target_domain or "").strip():
            raise ValueError("one of targetIp or targetDomain is required")
        return self

    @property
    def source_uri(self) -> str:
        """The longer of ip/domain, as the Java RouteRule did (minus its URI parsing crash)."""
        return max((self.source_ip or "", self.source_domain or ""), key=len).strip()

    @property
    def target_uri(self) -> str:
        return max((self.target_ip or "", self.target_domain or ""), key=len).strip()


class TenantConfig(EdgeModel):
    """A tenant's desired configuration: the Java `TenantDeployConfig` JSON, accepted as is."""

    model_config = ConfigDict(
        # giving both names of the previous snapshot is an error (`_one_previous`)
        json_schema_extra={"not": {"required": ["previousConfig", "sourceTenantDeployConfig"]}}
    )

    tenant_id: WireId = Field(max_length=128)
    plan_id: WirePlanId | None = Field(None, max_length=128)
    plan_version: int | None = Field(None, ge=0, le=MAX_VERSION)
    deploy_unit_id: int | None = Field(None, ge=0, le=MAX_VERSION)
    deploy_unit_version: int | None = Field(None, ge=0, le=MAX_VERSION)
    deploy_unit_name: str | None = Field(None, min_length=1, max_length=256)
    network_endpoints: list[NetworkEndpoint] = Field(
        default_factory=list, max_length=1000, json_schema_extra=_or_null
    )
    nacos_name_space: str | None = Field(None, max_length=256)
    default_flag: bool | None = None
    called_number_rules: str | None = Field(None, max_length=MAX_TEXT)
    trunk_group: str | None = Field(None, max_length=256)
    service_names: list[str] | None = Field(None, max_length=32)
    health_check_path: WirePath | None = Field(None, max_length=512)
    previous_config: TenantConfig | None = None
    #: The Java name of the previous snapshot: moved into `previous_config` once validated,
    #: never stored under this name. A field of its own so the schema lists both names.
    source_tenant_deploy_config: TenantConfig | None = Field(None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _one_previous(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if "previousConfig" in data and "sourceTenantDeployConfig" in data:
                raise ValueError(
                    "give the previous config as previousConfig or sourceTenantDeployConfig, "
                    "not both"
                )
            if data.get("networkEndpoints", ...) is None:
                data = {**data, "networkEndpoints": []}
        return data

    @field_validator("tenant_id")
    @classmethod
    def _tenant_id(cls, v: str) -> str:
        return _check_id(v, "tenantId")

    @field_validator("plan_id", mode="before")
    @classmethod
    def _plan_id(cls, v: Any) -> Any:
        return _coerce_plan_id(v) if v is not None else None

    @field_validator("plan_version", "deploy_unit_id", "deploy_unit_version", mode="before")
    @classmethod
    def _not_bool(cls, v: Any) -> Any:
        # pydantic's lax mode reads `true` as 1: a version must be a number, never a flag.
        if isinstance(v, bool):
            raise ValueError("must be an integer, not a boolean")
        return v

    @field_validator("health_check_path")
    @classmethod
    def _path_only(cls, v: str | None) -> str | None:
        # A config may choose the path on the configured instances, never another host,
        # and never a CR/LF or other control character that would reach the request line.
        if v is not None and not is_safe_path(v):
            raise ValueError(
                "must be an absolute path of printable characters such as "
                "/actuator/bg-sdk/{tenantId}"
            )
        return v

    @field_validator("previous_config", "source_tenant_deploy_config")
    @classmethod
    def _flat_history(cls, v: TenantConfig | None) -> TenantConfig | None:
        # Only one step of history is kept: the snapshot's own snapshot is irrelevant.
        if v is not None and v.previous_config is not None:
            v = v.model_copy(update={"previous_config": None})
        return v

    @model_validator(mode="after")
    def _java_previous(self) -> TenantConfig:
        if self.source_tenant_deploy_config is not None:
            self.previous_config = self.source_tenant_deploy_config
            self.source_tenant_deploy_config = None
        return self

    @property
    def media_routing(self) -> bool:
        return bool(self.trunk_group and self.called_number_rules)


def _coerce_plan_id(v: Any) -> str:
    if isinstance(v, bool):
        raise ValueError("planId must be a string or an integer")
    if isinstance(v, int):
        if not 0 <= v <= MAX_VERSION:
            raise ValueError("planId as a number must be between 0 and 2^63-1 (a Java Long)")
        v = str(v)
    if not isinstance(v, str):
        raise ValueError("planId must be a string or an integer")
    return _check_id(v, "planId")


class PlanHead(EdgeModel):
    """A plan's own fields, its tenants not validated yet.

    The submit path validates a plan one tenant at a time (`deployer.intake.validate_plan`)
    so that a 10,000-tenant plan never holds 10,000 TenantConfig models at once.
    """

    plan_id: WirePlanId
    #: The public contract this plan is written to (deployer/contract.py); absent: 1. A
    #: version this deployer does not know is a field error, never misread.
    contract_version: Literal[1] | None = Field(
        None, description="The contract version the plan is written to; absent means 1."
    )
    max_concurrency: int | None = Field(None, ge=1, le=100_000)
    #: Progressive rollout: canary, waves, bake, approval, gate, failure budget.
    strategy: Strategy | None = None
    tenants: list[Any] = Field(min_length=1)

    @field_validator("plan_id", mode="before")
    @classmethod
    def _plan_id(cls, v: Any) -> str:
        return _coerce_plan_id(v)

    @field_validator("contract_version", mode="before")
    @classmethod
    def _version_not_bool(cls, v: Any) -> Any:
        if isinstance(v, bool):  # True == 1 to Python, not to the contract
            raise ValueError("a version number, not a boolean")
        return v


def tenant_conflict(index: int, tenant: TenantConfig, plan_id: str, seen: set[str]) -> str | None:
    """Why tenant `index` cannot be in plan `plan_id` beside the tenants `seen` before it
    ("field: reason"), else None; adds it to `seen`."""
    if tenant.tenant_id in seen:
        return f"tenants[{index}].tenantId: duplicate tenant id {tenant.tenant_id}"
    seen.add(tenant.tenant_id)
    if tenant.plan_id is not None and tenant.plan_id != plan_id:
        return f"tenants[{index}].planId: {tenant.plan_id} differs from the plan's {plan_id}"
    return None


class Plan(PlanHead):
    """A rollout: one TenantConfig per tenant."""

    tenants: list[TenantConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Plan:
        seen: set[str] = set()
        for i, tenant in enumerate(self.tenants):
            conflict = tenant_conflict(i, tenant, self.plan_id, seen)
            if conflict:
                raise ValueError(conflict)
        return self


#: Between plan and tenant in a task id: ID_PATTERN allows it in neither, so no two
#: (plan, tenant) pairs share a task id (with '_', plan `a` tenant `b_c` and plan `a_b`
#: tenant `c` did, and the second plan overwrote the first's task).
TASK_ID_SEPARATOR = ":"


def task_id_for(plan_id: str, tenant_id: str) -> str:
    """Deterministic, so submitting the same plan twice names the same tasks."""
    return f"task-{plan_id}{TASK_ID_SEPARATOR}{tenant_id}"


def tenant_of_task(task_id: str) -> str:
    """The tenant id inside a task id (`task_id_for`'s inverse): ids cannot hold the separator."""
    return task_id.rpartition(TASK_ID_SEPARATOR)[2]


def __getattr__(name: str) -> Any:
    """`TaskRuntimeContext` and `Run` moved to deployer/context.py; step plugins written for
    0.1 import them from here, so the old names still resolve (without an import cycle)."""
    if name in ("TaskRuntimeContext", "Run"):
        from deployer import context

        return getattr(context, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
