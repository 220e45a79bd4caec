"""The public models: the JSON that `deployer ... --json`, the HTTP API (its OpenAPI response
schemas) and `DeployerClient` readers share — plan and task views, pages, waves, events,
command results and refusals — and the contract version they belong to.

The read models in deployer/views.py build these answers as plain JSON (they are read on
hot paths and redacted as a whole); the faces convert at the edge with `conform`, which
validates an answer against its model and gives back the same JSON: every field an answer
had, no field it lacked (`exclude_unset`), in the same order. Field names are a public
contract (docs/contracts.md): a model may gain optional fields, it never renames or drops
one without the deprecation rule of docs/architecture.md. Unknown fields are kept
(`extra="allow"`), so a newer server's additions pass through an older client's models.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from deployer.contract import CONTRACT_VERSION as CONTRACT_VERSION  # these answers' version


class PublicModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields kept."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


M = TypeVar("M", bound=PublicModel)


def conform(model: type[M], data: Any) -> dict[str, Any]:
    """`data` validated as `model` and given back as the same JSON (only the fields it had:
    an absent field stays absent, a null stays null). Raises pydantic.ValidationError when
    an answer breaks its model: the contract is checked where it leaves."""
    return model.model_validate(data).model_dump(mode="json", by_alias=True, exclude_unset=True)


class FieldError(PublicModel):
    """One invalid field of a refused input, and why."""

    field: str
    reason: str


class Problem(PublicModel):
    """Every refusal: `ok` false, a stable `code` (README `### Codes`), a message, and the
    field errors when input was invalid."""

    ok: bool = False
    code: str = Field(examples=["PLAN_NOT_FOUND"])
    message: str
    errors: list[dict[str, str]] | None = Field(None, description="[{field, reason}]")


class CommandResult(PublicModel):
    """The answer of a command (pause, resume, cancel, retry, rollback, approve, promote,
    budget) and of every Celery task: `{"ok", "code", "message", ...}`. `counts`: tasks per
    outcome; `refused` / `skipped`: the tasks left alone, each with its code."""

    ok: bool
    code: str
    message: str = ""
    counts: dict[str, int] | None = None
    refused: list[dict[str, Any]] | None = None
    skipped: list[dict[str, Any]] | None = None
    unrestored: list[dict[str, Any]] | None = None


class SubmitResult(CommandResult):
    """The answer of a submitted plan (`deployer.submit_plan`, `POST /api/v1/plans`):
    accepted, a duplicate of an accepted plan, or refused with its field errors."""

    plan_id: str | None = None
    #: accepted: how many tasks, and how many waves for a plan with a strategy
    tasks: int | None = None
    waves: int | None = None
    duplicate: bool | None = None
    errors: list[dict[str, Any]] | None = None


class Health(PublicModel):
    """`/healthz`: the state Redis answers."""

    ok: bool
    code: str
    message: str


class Failure(PublicModel):
    """The current run's failure: where, the error, its code, when."""

    stage: str | None = None
    error: str | None = None
    code: str | None = None
    at: str | None = None


class TaskRow(PublicModel):
    """One line of a task table."""

    task_id: str | None = None
    tenant_id: str | None = None
    status: str | None = None
    stage_name: str | None = None
    stage_index: int | None = None
    total_stages: int | None = None
    progress: str | None = None
    failure: Failure | None = None
    updated_at: str | None = None
    wave: int | None = None


class WaveView(PublicModel):
    """One wave of a plan with a strategy (times ISO-8601)."""

    index: int
    state: str
    tenants: int
    done: int
    failed: int
    counts: dict[str, int] = Field(default_factory=dict)
    bake_until: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    approved_by: str | None = None
    approved_at: str | None = None
    promoted_by: str | None = None
    promoted_at: str | None = None


class Budget(PublicModel):
    """The failure budget now (per plan, or the current wave's); once exceeded, when and
    (scope wave, an earlier wave's) where."""

    max: int
    used: int
    scope: str
    on_exceed: str
    exceeded: bool
    #: Scope wave: the wave whose budget `max` and `used` are (the current one).
    wave: int | None = None
    exceeded_at: str | None = None
    #: Scope wave, exceeded in another wave than the current: that wave and its figures.
    exceeded_wave: int | None = None
    exceeded_used: int | None = None
    exceeded_max: int | None = None


class Gate(PublicModel):
    """The gate of the current wave and its last refusal while it holds the wave."""

    name: str
    waiting: bool
    status: Any = None
    answer: str | None = None
    checked_at: str | None = None
    next_check_at: str | None = None
    refusals: int | None = None


class PlanView(PublicModel):
    """One plan: `deployer status P --json`, `GET /api/v1/plans/{planId}`. The rollout
    fields (strategy ... stopReason) are there only for a plan with a strategy."""

    plan_id: str
    status: str | None = None
    max_concurrency: int = 0
    total: int = 0
    counts: dict[str, int] = Field(default_factory=dict)
    control: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    strategy: dict[str, Any] | None = None
    wave: int | None = None
    wave_state: str | None = None
    waves: list[WaveView] | None = None
    bake_until: str | None = None
    budget: Budget | None = None
    gate: Gate | None = None
    window_opens_at: str | None = None
    promoted_all: bool | None = None
    stop_reason: str | None = None
    command_in_progress: str | None = None
    commands: list[str] = Field(default_factory=list)
    tasks: list[TaskRow] | None = None
    #: an archived plan says so and offers no commands
    archived: bool | None = None


class PlanRow(PublicModel):
    """One line of the plan list."""

    plan_id: str
    status: str | None = None
    total: int = 0
    counts: dict[str, int] = Field(default_factory=dict)
    created_at: str | None = None
    updated_at: str | None = None
    ended_at: str | None = None
    #: read from the archive (deployer/archive): history, no commands
    archived: bool | None = None
    archived_at: str | None = None


class PlanPage(PublicModel):
    """Plans, live and archived, newest first, a page at a time."""

    items: list[PlanRow]
    next_cursor: str | None = None
    total: int | None = None


class StageState(PublicModel):
    """A stage of the current run and where the task is: DONE, CURRENT, PAUSED, FAILED,
    PENDING."""

    index: int
    name: str | None = None
    state: str


class TaskView(PublicModel):
    """One task: `deployer task --json`, `GET /api/v1/tasks/{taskId}`. A text field is there
    only when non-empty, a number or a time only when readable; `context` is the run's
    context without its fence token; `hash` the tenant's written config."""

    task_id: str | None = None
    plan_id: str | None = None
    tenant_id: str | None = None
    status: str | None = None
    run_kind: str | None = None
    run_id: str | None = None
    stage_name: str | None = None
    progress: str | None = None
    cancelled_by: str | None = None
    superseded_by: str | None = None
    worker: str | None = None
    control: str | None = None
    wave: int | None = None
    stage_index: int | None = None
    total_stages: int | None = None
    checkpoint: int | None = None
    retry_count: int | None = None
    redeliveries: int | None = None
    created_at: str | None = None
    dispatched_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    updated_at: str | None = None
    failure: Failure | None = None
    stages: list[StageState] = Field(default_factory=list)
    commands: list[str] = Field(default_factory=list)
    unrestored: list[dict[str, Any]] = Field(default_factory=list)
    context: dict[str, Any] | None = None
    hash: dict[str, Any] | None = None
    #: an archived task says so, with its stage timeline and the config it deployed
    archived: bool | None = None


class TaskPage(PublicModel):
    """A page of a plan's tasks; `nextCursor` is None at the end, `scanned` how many tasks
    the page looked at."""

    items: list[TaskRow]
    next_cursor: str | None = None
    total: int
    scanned: int


class WavePage(TaskPage):
    """A page of a wave's tenants, with the wave (`deployer status P --wave N --json` adds
    the `planId`)."""

    plan_id: str | None = None
    wave: WaveView | None = None


class TenantTaskRow(TaskRow):
    """A task of a tenant, with its plan and whether it is the tenant's latest."""

    plan_id: str | None = None
    latest: bool = False


class TenantTasks(PublicModel):
    """Every task of a tenant, newest plan first, and which one is its latest."""

    tenant_id: str
    latest_task_id: str | None = None
    items: list[TenantTaskRow]


class Event(PublicModel):
    """One event of the history: its stream id and its fields (`type`, `planId`, `tenantId`,
    `ts`, ... as recorded: docs/contracts.md lists the types)."""

    id: str
    type: str | None = None


class EventPage(PublicModel):
    """Events newest first; `trimmed`: older ones were removed by retention."""

    items: list[Event]
    next_cursor: str | None = None
    trimmed: bool = False
    scanned: int = 0


__all__ = [
    "CONTRACT_VERSION",
    "Budget",
    "CommandResult",
    "Event",
    "EventPage",
    "Failure",
    "FieldError",
    "Gate",
    "Health",
    "PlanPage",
    "PlanRow",
    "PlanView",
    "Problem",
    "PublicModel",
    "StageState",
    "SubmitResult",
    "TaskPage",
    "TaskRow",
    "TaskView",
    "TenantTaskRow",
    "TenantTasks",
    "WavePage",
    "WaveView",
    "conform",
]
