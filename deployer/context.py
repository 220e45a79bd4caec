"""A run of a task: its stage specs and the context handed from stage to stage.

The context is the serialized state a chain carries (docs/contracts.md §4); a `Run` is what
create, retry and rollback all prepare (deployer/planner.py). Both travel on the wire, so
they are `WireModel`s like the plan's; they live apart from the plan's edge models because
they are the worker's state, not the operator's input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer
from pydantic_core import to_json

from deployer.specs import RunKind, StageSpec, WireModel

#: The scratch entry (ms since the epoch) a folded stage's end hands to the next stage's begin.
PREVIOUS_STAGE_ENDED_AT = "previousStageEndedAtMs"


class TaskRuntimeContext(WireModel):
    """The state handed from stage to stage along a chain (docs/contracts.md §4).

    `additional_data` holds run-wide values such as planVersion, fixed when the run is
    prepared; `scratch` holds per-step working data and is cleared whenever a run is
    re-prepared, so nothing stale leaks into a retry (the Java system's bug).

    Frozen: a context is a value. Every change is a named transition returning a new one
    (`next_step`, `after_wait`, `next_stage`, `for_retry`, ...), so no module rewrites a
    context another still holds, and a context is converted to and from the wire only here
    (`from_wire`, `to_wire`, `to_json`): the wire format is public (other languages read it),
    and field order, names and values stay byte-for-byte what they were.
    """

    model_config = ConfigDict(frozen=True)

    plan_id: str
    task_id: str
    tenant_id: str
    run_id: str
    run_kind: RunKind = RunKind.FORWARD
    token: str = ""
    #: The tenant's lease acquisition count when this run last took it (0: not yet).
    lease_epoch: int = 0
    stage_count: int = 0
    stage_index: int = 0
    step_index: int = 0
    attempt: int = 0
    if TYPE_CHECKING:  # read-only to the type checker: nothing mutates a context's maps
        additional_data: Mapping[str, Any] = Field(default_factory=dict)
        scratch: Mapping[str, Any] = Field(default_factory=dict)
    else:  # plain dicts to pydantic: validated ~1.5x faster than a Mapping
        additional_data: dict[str, Any] = Field(default_factory=dict)
        scratch: dict[str, Any] = Field(default_factory=dict)

    @property
    def plan_version(self) -> int | None:
        value = self.additional_data.get("planVersion")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def checkpoint(self) -> int:
        """The last stage this context has completed (-1: none): what the task hash keeps
        as `checkpoint` beside it. Derived here, never tracked apart."""
        return self.stage_index - 1

    # ---- creation and transitions ------------------------------------------------------

    @classmethod
    def start(
        cls,
        plan_id: str,
        task_id: str,
        tenant_id: str,
        run_id: str,
        kind: RunKind,
        plan_version: int | None,
        stage_count: int,
    ) -> TaskRuntimeContext:
        """A new run's context at its first stage: planVersion travels in additionalData,
        so every stage of the chain writes and verifies the same version."""
        return cls(
            plan_id=plan_id,
            task_id=task_id,
            tenant_id=tenant_id,
            run_id=run_id,
            run_kind=kind,
            stage_count=stage_count,
            additional_data={"planVersion": plan_version},
        )

    def _evolve(self, **changes: Any) -> TaskRuntimeContext:
        """A copy with `changes` (field names, valid values): what `model_copy(update=...)`
        does, at half its cost, for the transitions below (one or more per stage). The set
        of fields given at creation is shared, not extended: a frozen model never changes
        it, and contexts are always encoded whole (never `exclude_unset`)."""
        new = _new(TaskRuntimeContext)
        _set(new, "__dict__", {**self.__dict__, **changes})
        _set(new, "__pydantic_fields_set__", self.__pydantic_fields_set__)
        _set(new, "__pydantic_extra__", None)
        _set(new, "__pydantic_private__", None)
        return new

    def with_token(self, token: str) -> TaskRuntimeContext:
        """The same position under the fence token of a new send (slot, re-drive)."""
        return self._evolve(token=token)

    def with_additional(self, key: str, value: Any) -> TaskRuntimeContext:
        """A run-wide value added to `additionalData` (the run's trace, deployer/tracing.py):
        set when the run is prepared, kept by every transition."""
        return self._evolve(additional_data={**self.additional_data, key: value})

    def with_lease_epoch(self, epoch: int) -> TaskRuntimeContext:
        """This run (re)took the tenant's lease: its acquisition count now."""
        return self._evolve(lease_epoch=epoch)

    def after_wait(self, progress: Mapping[str, Any]) -> TaskRuntimeContext:
        """The current step said "not yet": poll it again, its progress kept."""
        return self._evolve(attempt=self.attempt + 1, scratch={**self.scratch, **progress})

    def next_step(self) -> TaskRuntimeContext:
        """The current step is done: the next one starts with no attempt and no scratch."""
        return self._evolve(step_index=self.step_index + 1, attempt=0, scratch={})

    def restart_stage(self) -> TaskRuntimeContext:
        """The current stage again from its first step, nothing of the earlier tries kept."""
        return self._evolve(step_index=0, attempt=0, scratch={})

    def next_stage(self) -> TaskRuntimeContext:
        """The current stage is done (its last step too): the next stage's first step, with
        no attempt and no scratch."""
        return self._evolve(stage_index=self.stage_index + 1, step_index=0, attempt=0, scratch={})

    def ended_previous_stage_at(self, ms: int) -> TaskRuntimeContext:
        """The first context of a stage whose previous stage left its end to this stage's
        begin (the fold, docs/reliability.md): the wall time that stage really ended, so its
        STAGE_COMPLETED and duration do not count the message's wait in the queue."""
        return self._evolve(scratch={**self.scratch, PREVIOUS_STAGE_ENDED_AT: ms})

    def for_retry(self, stage_index: int) -> TaskRuntimeContext:
        """This run again from `stage_index`: no attempt, no scratch, no token (a new send
        gives it one)."""
        return self._evolve(stage_index=stage_index, step_index=0, attempt=0, scratch={}, token="")

    # ---- the wire codec: the one place a context is converted ---------------------------

    @classmethod
    def from_wire(cls, data: Any) -> TaskRuntimeContext:
        """A context from a stage message's argument (a JSON object)."""
        return cls.model_validate(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> TaskRuntimeContext:
        """A context as the task hash stores it (`ctx`)."""
        return cls.model_validate_json(text)

    def to_wire(self) -> dict[str, Any]:
        """The JSON object a stage message carries (every field, wire names)."""
        cached = _last_wire
        if cached is not None and cached[0] is self:
            return cached[1]
        return self.model_dump(mode="json", by_alias=True)

    def to_json(self) -> str:
        """The JSON text the task hash stores as `ctx` (the same object, compact).

        A context whose message object was just encoded (`encode_for_next_stage`) is
        serialised from that object instead of converted again."""
        cached = _last_wire
        if cached is not None and cached[0] is self:
            return to_json(cached[1], inf_nan_mode="null").decode()
        return self.model_dump_json(by_alias=True)

    def encode_for_next_stage(self) -> dict[str, Any]:
        """`to_wire`, remembered for this (immutable) context: the checkpoint written before
        the next stage is sent (`to_json`) is then serialised from that object instead of
        converting the model a second time."""
        global _last_wire
        wire = self.to_wire()
        _last_wire = (self, wire)
        return wire


_new, _set = object.__new__, object.__setattr__

#: The last context encoded for a next stage and its message object (one slot: a stage
#: encodes its context, checkpoints it and returns it, nothing in between).
_last_wire: tuple[TaskRuntimeContext, dict[str, Any]] | None = None


class Unrestored(WireModel):
    """A service a rollback run cannot put back: the forward run changed it and nothing in
    the rollback undoes that (its previous config lacks what the service's stage needs)."""

    service: str
    reason: str


class Run(WireModel):
    """A prepared run of a task: what create, retry and rollback all return."""

    run_id: str
    kind: RunKind
    stages: list[StageSpec]
    context: TaskRuntimeContext
    start_index: int = 0
    #: A rollback's services it cannot restore (deployer.planner.prepare_rollback); stored
    #: with the run only when there are any.
    unrestored: list[Unrestored] = Field(default_factory=list)

    @model_serializer(mode="wrap")
    def _without_empty_unrestored(self, handler: SerializerFunctionWrapHandler) -> Any:
        out = handler(self)
        if isinstance(out, dict) and not self.unrestored:
            out.pop("unrestored", None)
        return out
