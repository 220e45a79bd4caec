"""The task hash (`deployer:task:{taskId}`, keys.TASK) as one typed record.

Redis keeps a task as a flat hash of strings with camelCase field names; Python reads and
writes it only through `TaskRecord` and the `Field` names here (the Lua scripts in
deployer/state/lua use the same names: keep the two in step). `tests/unit/test_record.py` fails
if another module reads a task-hash field by its string name.

Reading is lenient on purpose: a read model (views, CLI, web API) must show a task whose
hash holds a corrupt value rather than crash, so an unparseable number or status reads as
absent (None), never as an exception. Absent and empty text are the same (""), as in the
Lua scripts. The JSON fields (`run`, `ctx`, `config`) stay text until a caller parses them
(`run_model`, `context`, `tenant_config`), so a page of 500 task rows pays for none of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, NamedTuple

from deployer.context import Run, TaskRuntimeContext
from deployer.models import RunKind, TaskStatus, TenantConfig


class Field(StrEnum):
    """Every field of the task hash, by its stored (camelCase) name."""

    TASK_ID = "taskId"
    PLAN_ID = "planId"
    TENANT_ID = "tenantId"
    STATUS = "status"
    CONFIG = "config"  # TenantConfig JSON (with its previousConfig snapshot)
    RUN_ID = "runId"
    RUN_KIND = "runKind"
    RUN = "run"  # Run JSON, stored at first dispatch
    CTX = "ctx"  # TaskRuntimeContext JSON, checkpointed by each stage
    CHECKPOINT = "checkpoint"  # last completed stage index, -1 for none
    TOTAL_STAGES = "totalStages"
    STAGE_INDEX = "stageIndex"
    STAGE_NAME = "stageName"
    RETRY_COUNT = "retryCount"
    REDELIVERIES = "redeliveries"
    TOKEN = "token"  # fence token of the run that may act ('' when none)
    GEN = "gen"  # how many tokens the task was given
    SLOT = "slot"  # '1' while it holds a concurrency slot
    CURSOR = "cursor"  # token:stage:step:attempt of the last stage start
    CONTROL = "control"  # pending PAUSE / CANCEL request
    CONTROL_BY = "controlBy"
    CONTROL_REASON = "controlReason"
    FORCE = "force"  # '1': the run may apply over a newer task's config
    WAVE = "wave"
    PROGRESS = "progress"
    WORKER = "worker"  # node/pid of the last stage start
    LAST_ERROR = "lastError"
    FAILED_STAGE = "failedStage"
    FAILURE_CODE = "failureCode"  # the deployer.errors.Code of the last failure
    CANCELLED_BY = "cancelledBy"
    SUPERSEDED_BY = "supersededBy"
    CREATED_AT = "createdAt"
    UPDATED_AT = "updatedAt"
    DISPATCHED_AT = "dispatchedAt"
    STARTED_AT = "startedAt"
    ENDED_AT = "endedAt"
    STAGE_STARTED_AT = "stageStartedAt"  # when the current stage started (its duration metric)


class Cursor(NamedTuple):
    """`token:stage:step:attempt`: where a run last started a stage (field `cursor`), and
    the same shape for a message a worker holds (deployer/liveness.py)."""

    token: str
    stage: int
    step: int
    attempt: int

    @classmethod
    def parse(cls, text: str | None) -> Cursor | None:
        """None when empty or unreadable (the token itself may hold ':')."""
        parts = (text or "").rsplit(":", 3)
        if len(parts) != 4:
            return None
        try:
            return cls(parts[0], int(parts[1]), int(parts[2]), int(parts[3]))
        except ValueError:
            return None

    @property
    def at(self) -> tuple[int, int, int]:
        """(stage, step, attempt): later positions compare greater."""
        return self.stage, self.step, self.attempt

    def __str__(self) -> str:
        return f"{self.token}:{self.stage}:{self.step}:{self.attempt}"


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


_STATUSES = {s.value: s for s in TaskStatus}
_RUN_KINDS = {k.value: k for k in RunKind}


@dataclass(frozen=True)
class TaskRecord:
    """One task hash, or the part of it that was read (`Store.get_tasks(ids, fields)`).

    Text fields are "" when absent; numbers, times (ms since the epoch), status, run kind
    and cursor are None when absent or unreadable.
    """

    task_id: str = ""
    plan_id: str = ""
    tenant_id: str = ""
    status: TaskStatus | None = None
    config: str = ""
    run_id: str = ""
    run_kind: RunKind | None = None
    run: str = ""
    ctx: str = ""
    checkpoint: int | None = None
    total_stages: int | None = None
    stage_index: int | None = None
    stage_name: str = ""
    retry_count: int | None = None
    redeliveries: int | None = None
    token: str = ""
    gen: int | None = None
    slot: str = ""
    cursor: Cursor | None = None
    control: str = ""
    control_by: str = ""
    control_reason: str = ""
    force: str = ""
    wave: int | None = None
    progress: str = ""
    worker: str = ""
    last_error: str = ""
    failed_stage: str = ""
    failure_code: str = ""
    cancelled_by: str = ""
    superseded_by: str = ""
    created_at: int | None = None
    updated_at: int | None = None
    dispatched_at: int | None = None
    started_at: int | None = None
    ended_at: int | None = None
    stage_started_at: int | None = None
    #: The text as read (what `stored` answers with); not part of the record's value.
    raw: Mapping[str, str | None] = field(default_factory=dict, compare=False, repr=False)

    # ---- the hash -----------------------------------------------------------------------

    @classmethod
    def from_hash(cls, raw: Mapping[str, str | None]) -> TaskRecord:
        """From HGETALL (or HMGET zipped with its fields): unknown fields are ignored,
        None (an HMGET of a missing field) is absent, corrupt values read as absent."""
        values: dict[str, Any] = {"raw": raw}
        for name, text in raw.items():
            spec = _BY_FIELD.get(name)
            if spec is None or text is None:
                continue
            attr, parse = spec
            value = text if parse is None else parse(text)
            if value is not None:
                values[attr] = value
        # A page of task rows builds hundreds of these: the generated __init__ of a frozen
        # dataclass sets all 35 fields through object.__setattr__ (~4 us a record); only
        # the fields read are set here, the rest are the class's defaults.
        record = object.__new__(cls)
        record.__dict__.update(values)
        return record

    def to_hash(self, only: Iterable[Field] | None = None) -> dict[str, str]:
        """The hash fields of this record as stored: every field that is set (not "" or
        None), or exactly `only` (an "" there is written, clearing the field)."""
        out: dict[str, str] = {}
        for name in _FIELDS if only is None else only:
            value = getattr(self, _ATTR[name])
            if value is None or (only is None and value == ""):
                continue
            out[name.value] = str(value)
        return out

    def stored(self, only: Iterable[Field]) -> dict[str, str | None]:
        """The stored text of `only` as read, None where the hash had no such field: for
        output that shows the hash as it is (`deployer submit --wait --json` rows)."""
        return {f.value: self.raw.get(f.value) for f in only}

    # ---- derived ------------------------------------------------------------------------

    @property
    def last_checkpoint(self) -> int:
        """The last completed stage, -1 when none."""
        return -1 if self.checkpoint is None else self.checkpoint

    @property
    def started(self) -> bool:
        """Whether a stage of the task ever started (its config may be half applied)."""
        return bool(self.started_at) or self.last_checkpoint >= 0

    @property
    def in_flight(self) -> bool:
        return self.status in IN_FLIGHT

    def run_model(self) -> Run | None:
        """The stored run; None until the task is first dispatched. Raises ValueError
        (pydantic's ValidationError) when the stored JSON is not a run."""
        return Run.model_validate_json(self.run) if self.run else None

    def context(self) -> TaskRuntimeContext | None:
        """The checkpointed context; None until the task is first dispatched."""
        return TaskRuntimeContext.from_json(self.ctx) if self.ctx else None

    def tenant_config(self) -> TenantConfig:
        """The task's config (every task has one: written when its plan is created)."""
        return TenantConfig.model_validate_json(self.config)


#: Statuses whose progress text is live; a finished task's last poll text is history.
IN_FLIGHT = frozenset(
    {TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.ROLLING_BACK, TaskStatus.PAUSED}
)

_PARSERS: dict[str, Callable[[str], Any]] = {
    "status": _STATUSES.get,
    "run_kind": _RUN_KINDS.get,
    "cursor": Cursor.parse,
}
_ATTR: dict[Field, str] = {}
_BY_FIELD: dict[str, tuple[str, Callable[[str], Any] | None]] = {}
for _f in fields(TaskRecord):
    if _f.name == "raw":
        continue
    _name = Field["".join(c.upper() if c.isalpha() else c for c in _f.name)]
    _ATTR[_name] = _f.name
    _parse = _PARSERS.get(_f.name) or (_int if _f.type == "int | None" else None)
    _BY_FIELD[_name.value] = (_f.name, _parse)
_FIELDS = tuple(_ATTR)
assert set(_FIELDS) == set(Field), "every Field has a TaskRecord attribute and back"


def field_names(wanted: Iterable[Field]) -> list[str]:
    """The stored names of `wanted`, for an HMGET."""
    return [f.value for f in wanted]
