"""The one exception tree of deployer, and the `Code` every refusal, rejection and failure uses.

DeployerError
 ├── PermanentError          retrying the same input cannot help
 │    ├── PlanValidationError    (PLAN_INVALID: field errors of a rejected plan)
 │    │    ├── PlanTooLarge       (PLAN_TOO_LARGE: bytes or tenants over the limits)
 │    │    └── PlanTooDeep        (PLAN_TOO_DEEP: nested past what is parsed)
 │    ├── PlanConflict           (PLAN_CONFLICT: the planId exists with another body)
 │    ├── PlanUnreadable         (PLAN_UNREADABLE: a plan file that cannot be read)
 │    ├── IllegalTransition      (e.g. TASK_NOT_PAUSED)
 │    │    ├── PlanNotAwaitingApproval  (PLAN_NOT_AWAITING_APPROVAL, WAVE_NOT_AWAITING_APPROVAL,
 │    │    │                             WAVE_NOT_CURRENT, APPROVAL_REQUIRED, NOTHING_TO_PROMOTE,
 │    │    │                             PLAN_ROLLING_BACK, NO_FAILURE_BUDGET)
 │    │    └── PlanHasNoStrategy        (PLAN_HAS_NO_STRATEGY)
 │    ├── NotFound               (PLAN_NOT_FOUND, TASK_NOT_FOUND)
 │    ├── TargetInvalid          (TARGET_INVALID: a command's target has no valid shape;
 │    │                           WAVE_REQUIRED, BUDGET_INVALID: a command argument)
 │    ├── NoPreviousConfig       (NO_PREVIOUS_CONFIG: nothing to roll back to)
 │    ├── RollbackIncomplete     (ROLLBACK_INCOMPLETE: strict, and a service cannot be
 │    │                           restored from the previous config)
 │    ├── ConfigError            (CONFIG_INVALID: a TenantConfig cannot produce a stage)
 │    ├── NamespaceNotAllowed    (NAMESPACE_NOT_ALLOWED)
 │    ├── DiscoveryError         (NO_INSTANCES: no instance of a service to deploy to)
 │    ├── StaleRun               (a superseded run tried to write)
 │    ├── InsecureBind           (`deployer serve` off loopback without a token)
 │    ├── MessageRefused         (a broker message dead-lettered before any task ran)
 │    ├── ScriptReplyError       (SCRIPT_REPLY_INVALID: a Lua script answered what no
 │    │                           caller knows: code and scripts out of step)
 │    ├── StepFailed             (a step gave a definite no)
 │    └── StageFailed            (a stage ended its task FAILED: the Celery attempt fails)
 │    ├── SettingsInvalid        (REDIS_URL_INVALID, STATE_URL_REQUIRED, SENTINEL_MASTER_UNKNOWN,
 │    │                           REDIS_TLS_INVALID, REDIS_TLS_REFUSED: refused at start)
 ├── RegistryError           (REGISTRY_ERROR: the stage/step entry points are broken)
 └── TransientError          may succeed later
      └── PlanBusy               (PLAN_BUSY: another submit is writing the same planId)

The codes are public (docs/contracts.md §5, README, CHANGES.md): `Code` is a StrEnum, so a
member is its string everywhere it is stored, printed or compared, and the strings never change.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Code(StrEnum):
    """Every public code: command results, HTTP errors, rejections, failed tasks."""

    # ---- answers that are not refusals
    OK = "OK"
    ALREADY = "ALREADY"
    ACCEPTED = "ACCEPTED"
    ALREADY_SUBMITTED = "ALREADY_SUBMITTED"
    # ---- the exception tree's own codes
    DEPLOYER_ERROR = "DEPLOYER_ERROR"
    PERMANENT_ERROR = "PERMANENT_ERROR"
    TRANSIENT_ERROR = "TRANSIENT_ERROR"
    # ---- plans
    PLAN_INVALID = "PLAN_INVALID"
    PLAN_TOO_LARGE = "PLAN_TOO_LARGE"
    PLAN_TOO_DEEP = "PLAN_TOO_DEEP"
    PLAN_CONFLICT = "PLAN_CONFLICT"
    PLAN_UNREADABLE = "PLAN_UNREADABLE"
    PLAN_BUSY = "PLAN_BUSY"
    PLAN_NOT_FOUND = "PLAN_NOT_FOUND"
    PLAN_CANCELLED = "PLAN_CANCELLED"
    #: A command for a plan that retention moved to the archive: history, nothing to act on.
    PLAN_ARCHIVED = "PLAN_ARCHIVED"
    #: `deployer archive`: the archive database (DEPLOYER_ARCHIVE_URL) refused the pass or
    #: is unreachable; nothing was removed from Redis that is not in the archive.
    ARCHIVE_UNAVAILABLE = "ARCHIVE_UNAVAILABLE"
    PLAN_PAUSED = "PLAN_PAUSED"
    PLAN_NOT_AWAITING_APPROVAL = "PLAN_NOT_AWAITING_APPROVAL"
    PLAN_HAS_NO_STRATEGY = "PLAN_HAS_NO_STRATEGY"
    #: approve/promote of a wave that is not the one waiting (or current): both are named.
    WAVE_NOT_AWAITING_APPROVAL = "WAVE_NOT_AWAITING_APPROVAL"
    WAVE_NOT_CURRENT = "WAVE_NOT_CURRENT"
    #: A task message or API call approving without the wave it approves.
    WAVE_REQUIRED = "WAVE_REQUIRED"
    #: promote of a wave that still waits for an approval, without `approve`.
    APPROVAL_REQUIRED = "APPROVAL_REQUIRED"
    #: promote of a plan whose waves are over (DONE or HALTED).
    NOTHING_TO_PROMOTE = "NOTHING_TO_PROMOTE"
    #: budget/resume --budget of a plan without a failure budget.
    NO_FAILURE_BUDGET = "NO_FAILURE_BUDGET"
    BUDGET_INVALID = "BUDGET_INVALID"
    #: approve, promote or budget while the failure budget's rollback is under way.
    PLAN_ROLLING_BACK = "PLAN_ROLLING_BACK"
    MESSAGE_REFUSED = "MESSAGE_REFUSED"
    # ---- commands (deployer/lifecycle.py, deployer/control.py)
    NOT_FOUND = "NOT_FOUND"
    TASK_NOT_FOUND = "TASK_NOT_FOUND"
    TARGET_INVALID = "TARGET_INVALID"
    ILLEGAL_TRANSITION = "ILLEGAL_TRANSITION"
    TASK_CANCELLING = "TASK_CANCELLING"
    TASK_NOT_RUNNING = "TASK_NOT_RUNNING"
    TASK_NOT_PAUSED = "TASK_NOT_PAUSED"
    TASK_NOT_FAILED = "TASK_NOT_FAILED"
    TASK_ALREADY_FINISHED = "TASK_ALREADY_FINISHED"
    TASK_ALREADY_ROLLED_BACK = "TASK_ALREADY_ROLLED_BACK"
    TASK_NOT_ROLLBACKABLE = "TASK_NOT_ROLLBACKABLE"
    TASK_NEVER_STARTED = "TASK_NEVER_STARTED"
    TASK_SUPERSEDED = "TASK_SUPERSEDED"
    TASK_BUSY = "TASK_BUSY"
    APPROVE_PLAN_ONLY = "APPROVE_PLAN_ONLY"
    RETRY_LIMIT_REACHED = "RETRY_LIMIT_REACHED"
    NO_PREVIOUS_CONFIG = "NO_PREVIOUS_CONFIG"
    #: A strict rollback refused: it could not restore every service the forward run changed.
    ROLLBACK_INCOMPLETE = "ROLLBACK_INCOMPLETE"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    # ---- runs, stages and steps (a failed task's `failureCode`)
    CONFIG_INVALID = "CONFIG_INVALID"
    NAMESPACE_NOT_ALLOWED = "NAMESPACE_NOT_ALLOWED"
    NO_INSTANCES = "NO_INSTANCES"
    REGISTRY_ERROR = "REGISTRY_ERROR"
    STALE_RUN = "STALE_RUN"
    STEP_FAILED = "STEP_FAILED"
    STAGE_FAILED = "STAGE_FAILED"
    #: A stage delivered, or a task re-driven, more than DEPLOYER_MAX_REDELIVERIES times.
    REDELIVERY_LIMIT_REACHED = "REDELIVERY_LIMIT_REACHED"
    #: A task's stored record could not be turned into a run to send.
    RUN_UNPREPARABLE = "RUN_UNPREPARABLE"
    SCRIPT_REPLY_INVALID = "SCRIPT_REPLY_INVALID"
    # ---- the HTTP API and `deployer serve`
    API_TOKEN_REQUIRED = "API_TOKEN_REQUIRED"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    CROSS_ORIGIN = "CROSS_ORIGIN"
    UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
    FORCE_UNSUPPORTED = "FORCE_UNSUPPORTED"
    BODY_TOO_LARGE = "BODY_TOO_LARGE"
    TOO_MANY_STREAMS = "TOO_MANY_STREAMS"
    STREAMS_FULL = "STREAMS_FULL"
    REQUEST_INVALID = "REQUEST_INVALID"
    STATUS_INVALID = "STATUS_INVALID"
    REDIS_UNREACHABLE = "REDIS_UNREACHABLE"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    HTTP_ERROR = "HTTP_ERROR"
    # ---- settings, refused at start (one line, before anything runs)
    #: A broker, state or target Redis URL that is no Redis URL deployer can use.
    REDIS_URL_INVALID = "REDIS_URL_INVALID"
    #: The broker is not Redis and DEPLOYER_REDIS_URL is unset: no state store is guessed.
    STATE_URL_REQUIRED = "STATE_URL_REQUIRED"
    #: DEPLOYER_SENTINEL_MASTER empty, or no sentinel knows that master.
    SENTINEL_MASTER_UNKNOWN = "SENTINEL_MASTER_UNKNOWN"
    #: A DEPLOYER_REDIS_TLS_* file that cannot be read, or a client cert without its key.
    REDIS_TLS_INVALID = "REDIS_TLS_INVALID"
    #: A TLS Redis refused the handshake: it requires a client certificate
    #: (DEPLOYER_REDIS_TLS_CERT/_KEY) or did not accept the one given.
    REDIS_TLS_REFUSED = "REDIS_TLS_REFUSED"


class DeployerError(Exception):
    code: str = Code.DEPLOYER_ERROR

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def as_result(self) -> dict[str, Any]:
        """The public `{"ok", "code", "message", ...}` shape of a refused command."""
        return {"ok": False, "code": self.code, "message": self.message, **self.details}


def code_of(exc: BaseException, default: Code) -> str:
    """The code an exception carries (a DeployerError's), else `default`: what a failed task
    stores as its `failureCode`."""
    return exc.code if isinstance(exc, DeployerError) else default


class PermanentError(DeployerError):
    code = Code.PERMANENT_ERROR


class TransientError(DeployerError):
    code = Code.TRANSIENT_ERROR


class PlanValidationError(PermanentError):
    code = Code.PLAN_INVALID

    def __init__(
        self,
        message: str,
        errors: list[dict[str, str]],
        *,
        plan_id: str | None = None,
        error_count: int | None = None,
    ) -> None:
        count = len(errors) if error_count is None else error_count
        super().__init__(message, errors=errors, errorCount=count)
        self.errors = errors
        #: How many field errors the plan had; `errors` holds the first ones only.
        self.error_count = count
        #: The planId as far as it could be read (None: not at all), so the refusal is
        #: recorded under it and a caller waiting for its plan gets the answer.
        self.plan_id = plan_id


class PlanTooLarge(PlanValidationError):
    code = Code.PLAN_TOO_LARGE


class PlanTooDeep(PlanValidationError):
    code = Code.PLAN_TOO_DEEP


class PlanConflict(PermanentError):
    """A submit reuses a planId whose stored plan has another body (digest)."""

    code = Code.PLAN_CONFLICT


class PlanUnreadable(PermanentError):
    code = Code.PLAN_UNREADABLE


class IllegalTransition(PermanentError):
    code = Code.ILLEGAL_TRANSITION


class PlanArchived(IllegalTransition):
    """A plan command on a plan retention has archived (or is removing from Redis)."""

    code = Code.PLAN_ARCHIVED

    def __init__(self, plan_id: str) -> None:
        super().__init__(
            f"plan {plan_id} is archived (retention): its history reads, commands do not "
            f"act on it; a tenant's newest task still takes --tenant T",
            code=Code.PLAN_ARCHIVED,
        )


class NotFound(PermanentError):
    code = Code.NOT_FOUND


class StaleRun(PermanentError):
    code = Code.STALE_RUN


class InsecureBind(PermanentError):
    code = Code.API_TOKEN_REQUIRED


class MessageRefused(PermanentError):
    """A broker message the worker would not hand to a task (tasks/guard.py): its caller
    finds this code in `deployer:rejections` when a planId could be read from it."""

    code = Code.MESSAGE_REFUSED


class StepFailed(PermanentError):
    code = Code.STEP_FAILED


class StageFailed(PermanentError):
    """Raised by the stage task after its task was failed and its chain stopped, so the
    attempt is a FAILURE in Celery's events (Flower) instead of a SUCCESS with a text."""

    code = Code.STAGE_FAILED


class PlanBusy(TransientError):
    """Another submit is writing the same planId in slices and did not finish in time."""

    code = Code.PLAN_BUSY


class ScriptReplyError(PermanentError):
    """A Lua script answered what its caller does not know (deployer/state/scripts.py): the code
    and the scripts are out of step. Loud, never read as any one answer."""

    code = Code.SCRIPT_REPLY_INVALID


class TargetInvalid(PermanentError):
    """A command's target is not `{"planId"}`, `{"tenantId"}` or both, or an id is invalid."""

    code = Code.TARGET_INVALID


class NoPreviousConfig(PermanentError):
    """rollback: the task has no previous config snapshot to go back to."""

    code = Code.NO_PREVIOUS_CONFIG


class RollbackIncomplete(PermanentError):
    """rollback with `strict`: the previous config cannot restore every service the forward
    run changed (`unrestored` names each and why)."""

    code = Code.ROLLBACK_INCOMPLETE


class ConfigError(PermanentError):
    """A TenantConfig cannot produce a service's stage; `field` names the culprit."""

    code = Code.CONFIG_INVALID

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class DiscoveryError(PermanentError):
    """No instance of a service to deploy to."""

    code = Code.NO_INSTANCES


class RegistryError(DeployerError):
    """The stage and step entry points are missing or wrong (an installation problem)."""

    code = Code.REGISTRY_ERROR


class NamespaceNotAllowed(PermanentError):
    """A tenant's `nacosNameSpace` is outside DEPLOYER_NACOS_ALLOWED_NAMESPACES."""

    code = Code.NAMESPACE_NOT_ALLOWED


class PlanNotAwaitingApproval(IllegalTransition):
    """approve, promote, budget: the plan's waves are not where the command needs them (the
    code says how: no wave awaits approval, another wave does, ...)."""

    code = Code.PLAN_NOT_AWAITING_APPROVAL


class PlanHasNoStrategy(IllegalTransition):
    """approve: the plan has no waves to approve."""

    code = Code.PLAN_HAS_NO_STRATEGY


class WaveRequired(TargetInvalid):
    """approve without the wave it approves (a task message or an API call): an approval
    must name its wave, so a late or redelivered one cannot approve the next."""

    code = Code.WAVE_REQUIRED


class BudgetInvalid(PermanentError):
    """budget / resume --budget: the new maximum is not a count or a share."""

    code = Code.BUDGET_INVALID


class SettingsInvalid(PermanentError):
    """The settings cannot work (a Redis URL, Sentinel or TLS setting): refused at start with
    one line naming the setting, never a guessed default. The message holds no secret."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)

    def line(self) -> str:
        """The one line a process prints before it exits."""
        return f"refused {self.code}: {self.message}"
