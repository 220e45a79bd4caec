"""The one exception tree of deployer; every error has a stable `code`.

DeployerError
 ├── PermanentError          retrying the same input cannot help
 │    ├── PlanValidationError    (PLAN_INVALID: field errors of a rejected plan)
 │    │    ├── PlanTooLarge       (PLAN_TOO_LARGE: bytes or tenants over the limits)
 │    │    └── PlanTooDeep        (PLAN_TOO_DEEP: nested past what is parsed)
 │    ├── PlanConflict           (PLAN_CONFLICT: the planId exists with another body)
 │    ├── PlanUnreadable         (PLAN_UNREADABLE: a plan file that cannot be read)
 │    ├── IllegalTransition      (e.g. TASK_NOT_PAUSED)
 │    ├── NotFound               (PLAN_NOT_FOUND, TASK_NOT_FOUND)
 │    ├── StaleRun               (a superseded run tried to write)
 │    ├── InsecureBind           (`deployer serve` off loopback without a token)
 │    ├── MessageRefused         (a broker message dead-lettered before any task ran)
 │    ├── StepFailed             (a step gave a definite no)
 │    └── StageFailed            (a stage ended its task FAILED: the Celery attempt fails)
 └── TransientError          may succeed later (drives retries)
      ├── TenantBusy             (another run holds the tenant lease)
      └── NotYet                 (a waiting step is not satisfied yet)
"""

from __future__ import annotations

from typing import Any


class DeployerError(Exception):
    code = "DEPLOYER_ERROR"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def as_result(self) -> dict[str, Any]:
        """The public `{"ok", "code", "message", ...}` shape of a refused command."""
        return {"ok": False, "code": self.code, "message": self.message, **self.details}


class PermanentError(DeployerError):
    code = "PERMANENT_ERROR"


class TransientError(DeployerError):
    code = "TRANSIENT_ERROR"


class PlanValidationError(PermanentError):
    code = "PLAN_INVALID"

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
    code = "PLAN_TOO_LARGE"


class PlanTooDeep(PlanValidationError):
    code = "PLAN_TOO_DEEP"


class PlanConflict(PermanentError):
    """A submit reuses a planId whose stored plan has another body (digest)."""

    code = "PLAN_CONFLICT"


class PlanUnreadable(PermanentError):
    code = "PLAN_UNREADABLE"


class IllegalTransition(PermanentError):
    code = "ILLEGAL_TRANSITION"


class NotFound(PermanentError):
    code = "NOT_FOUND"


class StaleRun(PermanentError):
    code = "STALE_RUN"


class InsecureBind(PermanentError):
    code = "API_TOKEN_REQUIRED"


class MessageRefused(PermanentError):
    """A broker message the worker would not hand to a task (tasks/guard.py): its caller
    finds this code in `deployer:rejections` when a planId could be read from it."""

    code = "MESSAGE_REFUSED"


class StepFailed(PermanentError):
    code = "STEP_FAILED"


class StageFailed(PermanentError):
    """Raised by the stage task after its task was failed and its chain stopped, so the
    attempt is a FAILURE in Celery's events (Flower) instead of a SUCCESS with a text."""

    code = "STAGE_FAILED"


class TenantBusy(TransientError):
    code = "TENANT_BUSY"


class NotYet(TransientError):
    code = "NOT_YET"


class NamespaceNotAllowed(PermanentError):
    """A tenant's `nacosNameSpace` is outside DEPLOYER_NACOS_ALLOWED_NAMESPACES."""

    code = "NAMESPACE_NOT_ALLOWED"


class PlanNotAwaitingApproval(IllegalTransition):
    """approve: the plan's current wave does not wait for an approval."""

    code = "PLAN_NOT_AWAITING_APPROVAL"


class PlanHasNoStrategy(IllegalTransition):
    """approve: the plan has no waves to approve."""

    code = "PLAN_HAS_NO_STRATEGY"
