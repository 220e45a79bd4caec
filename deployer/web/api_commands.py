"""`/api/v1/.../{command}`: pause, resume, cancel, retry, rollback for a plan, a tenant's
latest task or one (plan, tenant) task, and approve, promote, budget for a plan's waves, run
here as the CLI runs them (`DeployerClient.execute`: the control tasks' own code).

The answer is the Controller's `{"ok", "code", "message", ...}`: 200 done or already so,
404 unknown plan/tenant/command, 409 refused (the code says why), 422 invalid target or
argument (an approve without its `wave`: WAVE_REQUIRED).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, ConfigDict, Field

from deployer.errors import Code
from deployer.lifecycle import WAVE_COMMANDS, Command
from deployer.public import CommandResult, conform
from deployer.web.answers import ApiError, RedactedJSON
from deployer.web.deps import COMMAND, PROBLEMS, client, valid_id

router = APIRouter(prefix="/api/v1", responses=PROBLEMS, tags=["commands"])


class CommandBody(BaseModel):
    """Optional body of a command (JSON); every field is recorded in its events."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    by: str | None = Field(None, max_length=200, description="Who asks.")
    reason: str | None = Field(None, max_length=1000, description="Why.")
    from_checkpoint: bool = Field(
        False, alias="fromCheckpoint", description="retry: skip the stages already done."
    )
    force: bool = Field(
        False,
        description="resume, retry, rollback: apply even where a newer run deployed the tenant "
        "since (else that task ends SUPERSEDED).",
    )
    wave: int | None = Field(
        None,
        ge=0,
        description="approve (required): the wave approved; promote: the wave promoted, which "
        "must be the current one.",
    )
    all: bool = Field(False, description="promote: skip every remaining wave's bake.")
    approve: bool = Field(False, description="promote: approve a wave that waits for it too.")
    budget: int | str | None = Field(
        None, description='resume: a new failure budget first (a count, or a share "5%").'
    )
    max: int | str | None = Field(
        None, description='budget: the new failure budget (a count, or a share "5%").'
    )
    reset: bool = Field(
        False, description="budget, resume: the failures so far no longer count against it."
    )
    strict: bool = Field(
        False,
        description="rollback: refuse (ROLLBACK_INCOMPLETE) a task's rollback that cannot "
        "restore every service its forward run changed.",
    )


COMMAND_STATUS: dict[str, int] = {
    Code.PLAN_NOT_FOUND: 404,
    Code.TASK_NOT_FOUND: 404,
    Code.NOT_FOUND: 404,
    Code.TARGET_INVALID: 422,
    Code.WAVE_REQUIRED: 422,
    Code.BUDGET_INVALID: 422,
    Code.INTERNAL_ERROR: 500,
}


def _command(value: str, plan: bool) -> Command:
    try:
        command = Command(value)
    except ValueError:
        raise ApiError(404, Code.UNKNOWN_COMMAND, f"no command {value}") from None
    if command in WAVE_COMMANDS and not plan:
        raise ApiError(404, Code.UNKNOWN_COMMAND, f"{command.value} applies to a plan")
    return command


def _execute(
    request: Request, command: Command, target: dict[str, Any], body: CommandBody | None
) -> RedactedJSON:
    body = body or CommandBody()
    who = body.by or f"api@{request.client.host if request.client else 'unknown'}"
    options: dict[str, Any] = {}
    if command in (Command.APPROVE, Command.PROMOTE) and body.wave is not None:
        target = {**target, "wave": body.wave}
    if command is Command.PROMOTE:
        options = {"all_waves": body.all, "approve": body.approve}
    elif command is Command.BUDGET:
        options = {"budget": body.max, "reset": body.reset}
    elif command is Command.RESUME and "tenantId" not in target:
        options = {"budget": body.budget, "reset": body.reset}
    answer = client(request).execute(
        command,
        target,
        by=who,
        reason=body.reason,
        from_checkpoint=body.from_checkpoint and command is Command.RETRY,
        force=body.force,
        strict=body.strict and command is Command.ROLLBACK,
        **options,
    )
    answer = conform(CommandResult, answer)
    if answer.get("ok"):
        return RedactedJSON(answer, 200)
    return RedactedJSON(answer, COMMAND_STATUS.get(str(answer.get("code")), 409))


CommandIn = Annotated[CommandBody | None, Body()]
COMMAND_DOC = (
    "pause, resume, cancel, retry, rollback; for plans with a strategy also approve (body "
    '{"wave": N}, required), promote ({"wave"?, "all"?, "approve"?}) and budget ({"max"?, '
    '"reset"?}). Answers the Controller\'s {ok, code, message, ...}: 200 done or already so, '
    "404 unknown, 409 refused (the code says why), 422 invalid target or argument."
)


@router.post(
    "/plans/{planId}/{command}",
    summary="Command every task of a plan",
    description=COMMAND_DOC,
    dependencies=COMMAND,
    response_model=CommandResult,
    responses={409: {"model": CommandResult, "description": "refused: the code says why"}},
)
def plan_command(
    request: Request, planId: str, command: str, body: CommandIn = None
) -> RedactedJSON:
    return _execute(request, _command(command, True), {"planId": valid_id(planId, "planId")}, body)


@router.post(
    "/tenants/{tenantId}/{command}",
    summary="Command a tenant's latest task",
    description=COMMAND_DOC,
    dependencies=COMMAND,
    response_model=CommandResult,
    responses={409: {"model": CommandResult, "description": "refused: the code says why"}},
)
def tenant_command(
    request: Request, tenantId: str, command: str, body: CommandIn = None
) -> RedactedJSON:
    target = {"tenantId": valid_id(tenantId, "tenantId")}
    return _execute(request, _command(command, False), target, body)


@router.post(
    "/plans/{planId}/tenants/{tenantId}/{command}",
    summary="Command one (plan, tenant) task",
    description=COMMAND_DOC,
    dependencies=COMMAND,
    response_model=CommandResult,
    responses={409: {"model": CommandResult, "description": "refused: the code says why"}},
)
def task_command(
    request: Request, planId: str, tenantId: str, command: str, body: CommandIn = None
) -> RedactedJSON:
    target = {"planId": valid_id(planId, "planId"), "tenantId": valid_id(tenantId, "tenantId")}
    return _execute(request, _command(command, False), target, body)
