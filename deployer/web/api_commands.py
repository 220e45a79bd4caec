"""`/api/v1/.../{command}`: pause, resume, cancel, retry, rollback (approve) for a plan, a
tenant's latest task or one (plan, tenant) task, run here as the CLI runs them
(`DeployerClient.execute`: the control tasks' own code).

The answer is the Controller's `{"ok", "code", "message", ...}`: 200 done or already so,
404 unknown plan/tenant/command, 409 refused (the code says why), 422 invalid target.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, ConfigDict, Field

from deployer.errors import Code
from deployer.lifecycle import Command
from deployer.web.app import ApiError, RedactedJSON
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
    force: bool = Field(False, description="Re-apply even if a newer run deployed the tenant.")
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
    Code.INTERNAL_ERROR: 500,
}


def _command(value: str, plan: bool) -> Command:
    try:
        command = Command(value)
    except ValueError:
        raise ApiError(404, Code.UNKNOWN_COMMAND, f"no command {value}") from None
    if command.value == "approve" and not plan:
        raise ApiError(404, Code.UNKNOWN_COMMAND, "approve applies to a plan")
    return command


def _execute(
    request: Request, command: Command, target: dict[str, str], body: CommandBody | None
) -> RedactedJSON:
    body = body or CommandBody()
    who = body.by or f"api@{request.client.host if request.client else 'unknown'}"
    answer = client(request).execute(
        command,
        target,
        by=who,
        reason=body.reason,
        from_checkpoint=body.from_checkpoint and command is Command.RETRY,
        force=body.force,
        strict=body.strict and command is Command.ROLLBACK,
    )
    if answer.get("ok"):
        return RedactedJSON(answer, 200)
    return RedactedJSON(answer, COMMAND_STATUS.get(str(answer.get("code")), 409))


CommandIn = Annotated[CommandBody | None, Body()]
COMMAND_DOC = (
    "pause, resume, cancel, retry, rollback (approve: plans with a strategy). Answers the "
    "Controller's {ok, code, message, ...}: 200 done or already so, 404 unknown, 409 refused "
    "(the code says why), 422 invalid target."
)


@router.post(
    "/plans/{planId}/{command}",
    summary="Command every task of a plan",
    description=COMMAND_DOC,
    dependencies=COMMAND,
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
)
def task_command(
    request: Request, planId: str, tenantId: str, command: str, body: CommandIn = None
) -> RedactedJSON:
    target = {"planId": valid_id(planId, "planId"), "tenantId": valid_id(tenantId, "tenantId")}
    return _execute(request, _command(command, False), target, body)
