"""The plugin interface in one module: what an assembler builds, what a step does, and the
values they exchange with deployer — and nothing else.

A plugin (a new service type or step type, registered through entry points, see
stages/registry.py) imports what it needs from here:

    from stages.types import Assembler, StageSpec, StepSpec, TenantConfig, Settings
    from stages.types import Done, Step, StepParams, StepResult, Wait, WakeOn
    from stages.types import TaskRuntimeContext, StepEnv  # StepEnv: stages.base at run time

An *assembler* turns a TenantConfig into the StageSpec of one service (pure, no I/O); a
*step* executes one StepSpec against the outside world and answers `Done` or `Wait`. Specs
are plain JSON, stored with each run, so a retry re-runs exactly what was planned and a
rollback is only a different config handed to the same assemblers.

This module imports no Redis, Celery, HTTP client or thread code (a test checks it in a
fresh interpreter): the interface does not change when the state layer does. What a step
may touch at run time — the target Redis, the HTTP client, discovery — is the `StepEnv`
(stages/base.py), built by the worker and handed to `Step.run`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from deployer.context import TaskRuntimeContext as TaskRuntimeContext
from deployer.errors import ConfigError as ConfigError
from deployer.errors import StepFailed as StepFailed
from deployer.models import TenantConfig as TenantConfig
from deployer.settings import Settings as Settings
from deployer.specs import StageSpec as StageSpec
from deployer.specs import StepSpec as StepSpec

if TYPE_CHECKING:  # annotations only: the environment holds the Redis and HTTP clients
    from stages.base import StepEnv


class Assembler(ABC):
    """Builds the stage of one service type from a TenantConfig."""

    #: Stage name, also the name in `serviceNames` and in the entry point.
    service: ClassVar[str]
    #: Position among services, the Java `@Order` (docs/contracts.md §3):
    #: asbc 10, portal 20, bg 30, ob 40.
    order: ClassVar[int]

    #: The wire fields `supports` needs, in the order a missing one is reported.
    requires: ClassVar[tuple[str, ...]] = ()
    #: Hash field -> JSON paths of its value that every run sets anew (a timestamp): a diff
    #: shows a difference there as volatile, not as a change (deployer/diff.py).
    volatile: ClassVar[dict[str, tuple[str, ...]]] = {}

    @abstractmethod
    def supports(self, config: TenantConfig) -> bool:
        """Whether this tenant needs the service at all."""

    def missing(self, config: TenantConfig) -> str:
        """The first of `requires` that `config` leaves empty (the field to report when a
        service named in serviceNames cannot be built)."""
        wire = config.model_dump(by_alias=True)
        return next((f for f in self.requires if not wire.get(f)), "serviceNames")

    @abstractmethod
    def build(
        self, config: TenantConfig, replacing: TenantConfig | None, settings: Settings
    ) -> StageSpec:
        """The stage applying `config`, which replaces `replacing` (None: first deploy)."""


@dataclass(frozen=True)
class WakeOn:
    """What wakes a parked HealthCheck: an ack from one of `instances` of `service` for
    `version` (None: the run has no planVersion, any version wakes it). The parking
    (deployer/parking.py) matches acks against it."""

    service: str
    version: int | None
    instances: list[str] = field(default_factory=list)


@dataclass
class Done:
    """The step finished; the stage moves on."""


@dataclass
class Wait:
    """Not yet: re-run this step after `countdown` seconds, without holding a worker.

    `wake`: the step expects instances' acks (deployer/parking.py): its re-send is parked
    and an ack that matches wakes it before the countdown."""

    countdown: float
    progress: dict[str, Any] = field(default_factory=dict)
    wake: WakeOn | None = None


StepResult = Done | Wait


class StepParams(BaseModel):
    """A step type's parameters, as its StepSpec carries them (camelCase on the wire).

    Every step type declares its own (`Step.Params`); the stage factory validates each
    step's parameters against it when the stages are built, so a misspelt or mistyped
    parameter refuses the plan at submit with the field and the reason, instead of being
    read as "absent" by a `.get` when the stage runs. Wire names only (no snake_case
    spelling is accepted), no unknown parameter.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=False,
        validate_by_alias=True,
        extra="forbid",
        frozen=True,
    )


#: The name the issue and the docs use for a step's parameter model.
Params = StepParams

P = TypeVar("P", bound=StepParams)


class Step(ABC, Generic[P]):
    """One kind of step; instances are stateless and shared."""

    type_name: ClassVar[str]
    #: Its parameters (a StepParams model); the registry refuses a step type without one.
    Params: type[P]
    #: Whether the step calls the service's instances (HTTP): a plan whose stages use such a
    #: step for a service with no instance is refused at submit (deployer.intake.preflight).
    calls_instances: ClassVar[bool] = False

    def parse(self, step: StepSpec) -> P:
        """`step`'s parameters, validated (pydantic.ValidationError when they are not)."""
        return self.Params.model_validate(step.params)

    def writes(self, step: StepSpec) -> dict[str, Any]:
        """The service fields of the tenant's hash this step writes, each with the value
        (JSON) written; none by default. A rollback deletes the fields the older config's
        steps no longer write; `deployer diff` shows the values."""
        return {}

    def deleting(self, step: StepSpec, fields: Sequence[str]) -> StepSpec | None:
        """`step` changed to also delete `fields` from the tenant's hash in its write, or
        None when this step type cannot (only a step that writes the hash can)."""
        return None

    @abstractmethod
    def run(self, step: StepSpec, ctx: TaskRuntimeContext, env: StepEnv) -> StepResult:
        """Do the step (idempotently: a redelivered stage runs it again)."""


__all__ = [
    "Assembler",
    "ConfigError",
    "Done",
    "Params",
    "Settings",
    "StageSpec",
    "Step",
    "StepEnv",
    "StepFailed",
    "StepParams",
    "StepResult",
    "StepSpec",
    "TaskRuntimeContext",
    "TenantConfig",
    "Wait",
    "WakeOn",
]
