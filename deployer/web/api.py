"""`/api/v1`: plans, tasks, commands and events, as JSON with stable codes.

Submit goes through the same `Planner.submit` as the `deployer.submit_plan` task (same
validation, field errors and idempotency); commands through the same `Controller` as the
CLI and the control tasks. HTTP status from the answer's code: 201 accepted, 200 duplicate
or done, 404 unknown plan/tenant, 409 refused (the code says why), 422 invalid input.
"""

from __future__ import annotations

import inspect
import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from deployer import views
from deployer.errors import DeployerError
from deployer.lifecycle import Command
from deployer.models import ID_PATTERN, Plan, TaskStatus, task_id_for
from deployer.web import history, stream
from deployer.web.app import ApiError, RedactedJSON
from deployer.web.deps import can_command, can_read, settings, store


class Problem(BaseModel):
    """Every refusal: a stable `code`, a message, and field errors when input was invalid."""

    ok: bool = False
    code: str = Field(examples=["PLAN_NOT_FOUND"])
    message: str
    errors: list[dict[str, str]] | None = Field(None, description="[{field, reason}]")


_PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": text}
    for status, text in (
        (401, "UNAUTHORIZED: a token is required"),
        (403, "FORBIDDEN: a read-only token"),
        (404, "PLAN_NOT_FOUND, TASK_NOT_FOUND, UNKNOWN_COMMAND"),
        (409, "refused: the lifecycle's code (TASK_NOT_FAILED, ...), PLAN_CONFLICT"),
        (413, "BODY_TOO_LARGE"),
        (422, "PLAN_INVALID, REQUEST_INVALID, TARGET_INVALID, STATUS_INVALID"),
    )
}
router = APIRouter(prefix="/api/v1", responses=_PROBLEMS)
read = [Depends(can_read)]
_ID = re.compile(ID_PATTERN)

Limit = Annotated[int, Query(ge=1, le=views.MAX_PAGE, description="Items per page.")]
Cursor = Annotated[
    str | None, Query(pattern=r"^\d{1,12}$", description="`nextCursor` of the previous page.")
]


def _id(value: str, what: str) -> str:
    if not _ID.fullmatch(value):
        raise ApiError(422, "TARGET_INVALID", f"{what}: not a valid id")
    return value


# ---- plans -------------------------------------------------------------------------------

SUBMIT_STATUS = {"PLAN_CONFLICT": 409, "PLAN_INVALID": 422, "INTERNAL_ERROR": 500}


def submit_status(answer: dict[str, Any]) -> int:
    """201 for a plan accepted now, 200 for a duplicate of an accepted one, else by code."""
    if answer.get("ok"):
        duplicate = answer.get("duplicate") or answer.get("code") == "ALREADY_SUBMITTED"
        return 200 if duplicate else 201
    return SUBMIT_STATUS.get(str(answer.get("code")), 422)


def _planner() -> Any:
    from tasks.runtime import planner  # the workers' own planner (it sends the chains)

    return planner()


@router.post(
    "/plans",
    tags=["plans"],
    summary="Submit a plan (as deployer.submit_plan does)",
    status_code=201,
    dependencies=[Depends(can_command)],
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A plan; its full JSON Schema is GET /api/v1/schema.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        "responses": {"200": {"description": "the same plan was already accepted (duplicate)"}},
    },
)
async def submit_plan(request: Request) -> RedactedJSON:
    body = await request.body()
    text = body.decode("utf-8", "replace")
    answer: dict[str, Any] = await run_in_threadpool(_planner().submit, text)
    return RedactedJSON(answer, submit_status(answer))


@router.get("/schema", tags=["plans"], summary="JSON Schema of a plan", dependencies=read)
def plan_schema() -> JSONResponse:
    # a schema names fields (`password` may be one): it holds no values to redact
    return JSONResponse(Plan.model_json_schema(by_alias=True))


@router.get("/plans", tags=["plans"], summary="Plans, newest first", dependencies=read)
def list_plans(request: Request, limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
    return views.plans_page(store(request), limit, cursor)


@router.get(
    "/plans/{planId}",
    tags=["plans"],
    summary="One plan (the JSON of `deployer status P --json`)",
    dependencies=read,
)
def get_plan(
    request: Request,
    planId: str,
    sample: Annotated[int, Query(ge=0, le=100)] = 20,
) -> dict[str, Any]:
    view = views.plan_view(store(request), _id(planId, "planId"), sample)
    if view is None:
        raise ApiError(404, "PLAN_NOT_FOUND", f"no plan {planId}")
    return view


@router.get(
    "/plans/{planId}/tasks",
    tags=["tasks"],
    summary="A page of a plan's tasks, optionally of one status or matching a tenant id",
    dependencies=read,
)
def plan_tasks(
    request: Request,
    planId: str,
    status: Annotated[str | None, Query(description="A task status, e.g. FAILED.")] = None,
    q: Annotated[str | None, Query(max_length=128, description="Tenant id contains.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    s = store(request)
    if status is not None:
        try:
            status = TaskStatus(status.upper()).value
        except ValueError:
            raise ApiError(422, "STATUS_INVALID", f"unknown task status {status}") from None
    if not s.plan_exists(_id(planId, "planId")):
        raise ApiError(404, "PLAN_NOT_FOUND", f"no plan {planId}")
    return views.task_page(s, planId, status=status, search=q, limit=limit, cursor=cursor)


@router.get(
    "/plans/{planId}/tenants/{tenantId}",
    tags=["tasks"],
    summary="One (plan, tenant) task: stages, checkpoint, progress, failure, written hash",
    dependencies=read,
)
def plan_tenant_task(request: Request, planId: str, tenantId: str) -> dict[str, Any]:
    task_id = task_id_for(_id(planId, "planId"), _id(tenantId, "tenantId"))
    return _task(request, task_id, f"no task for tenant {tenantId} in plan {planId}")


@router.get("/tasks/{taskId}", tags=["tasks"], summary="One task by id", dependencies=read)
def get_task(request: Request, taskId: str) -> dict[str, Any]:
    return _task(request, taskId, f"no task {taskId}")


def _task(request: Request, task_id: str, missing: str) -> dict[str, Any]:
    view = views.task_view(store(request), task_id)
    if view is None:
        raise ApiError(404, "TASK_NOT_FOUND", missing)
    return view


@router.get(
    "/tenants/{tenantId}/tasks",
    tags=["tasks"],
    summary="Every task of a tenant (newest plan first) and which one is its latest",
    dependencies=read,
)
def tenant_tasks(request: Request, tenantId: str) -> dict[str, Any]:
    out = views.tenant_tasks(store(request), _id(tenantId, "tenantId"))
    if not out["items"] and out["latestTaskId"] is None:
        raise ApiError(404, "TASK_NOT_FOUND", f"no task for tenant {tenantId}")
    return out


# ---- commands ----------------------------------------------------------------------------


class CommandBody(BaseModel):
    """Optional body of a command (JSON); every field is recorded in its events."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    by: str | None = Field(None, max_length=200, description="Who asks.")
    reason: str | None = Field(None, max_length=1000, description="Why.")
    from_checkpoint: bool = Field(
        False, alias="fromCheckpoint", description="retry: skip the stages already done."
    )
    force: bool = Field(False, description="Re-apply even if a newer run deployed the tenant.")


COMMAND_STATUS = {
    "PLAN_NOT_FOUND": 404,
    "TASK_NOT_FOUND": 404,
    "NOT_FOUND": 404,
    "TARGET_INVALID": 422,
    "INTERNAL_ERROR": 500,
}


def _command(value: str, plan: bool) -> Command:
    try:
        command = Command(value)
    except ValueError:
        raise ApiError(404, "UNKNOWN_COMMAND", f"no command {value}") from None
    if command.value == "approve" and not plan:
        raise ApiError(404, "UNKNOWN_COMMAND", "approve applies to a plan")
    return command


def _execute(
    request: Request, command: Command, target: dict[str, str], body: CommandBody | None
) -> RedactedJSON:
    from tasks.runtime import controller  # the CLI's and the control tasks' Controller

    body = body or CommandBody()
    ctl = controller()
    kw: dict[str, Any] = {}
    if command is Command.RETRY:
        kw["from_checkpoint"] = body.from_checkpoint
    if body.force:
        if "force" not in inspect.signature(ctl.execute).parameters:
            raise ApiError(422, "FORCE_UNSUPPORTED", "this version cannot force a command")
        kw["force"] = True
    who = body.by or f"api@{request.client.host if request.client else 'unknown'}"
    try:
        answer = ctl.execute(command, target, by=who, reason=body.reason, **kw)
    except DeployerError as exc:
        answer = exc.as_result()
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
    tags=["commands"],
    summary="Command every task of a plan",
    description=COMMAND_DOC,
    dependencies=[Depends(can_command)],
)
def plan_command(
    request: Request, planId: str, command: str, body: CommandIn = None
) -> RedactedJSON:
    return _execute(request, _command(command, True), {"planId": _id(planId, "planId")}, body)


@router.post(
    "/tenants/{tenantId}/{command}",
    tags=["commands"],
    summary="Command a tenant's latest task",
    description=COMMAND_DOC,
    dependencies=[Depends(can_command)],
)
def tenant_command(
    request: Request, tenantId: str, command: str, body: CommandIn = None
) -> RedactedJSON:
    target = {"tenantId": _id(tenantId, "tenantId")}
    return _execute(request, _command(command, False), target, body)


@router.post(
    "/plans/{planId}/tenants/{tenantId}/{command}",
    tags=["commands"],
    summary="Command one (plan, tenant) task",
    description=COMMAND_DOC,
    dependencies=[Depends(can_command)],
)
def task_command(
    request: Request, planId: str, tenantId: str, command: str, body: CommandIn = None
) -> RedactedJSON:
    target = {"planId": _id(planId, "planId"), "tenantId": _id(tenantId, "tenantId")}
    return _execute(request, _command(command, False), target, body)


# ---- events ------------------------------------------------------------------------------


@router.get(
    "/events",
    tags=["events"],
    summary="Event history, newest first, filtered by plan and/or tenant",
    dependencies=read,
)
def event_history(
    request: Request,
    plan: str | None = None,
    tenant: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[str | None, Query(pattern=r"^\d{1,20}-\d{1,20}$")] = None,
) -> dict[str, Any]:
    return history.history(store(request).r, plan=plan, tenant=tenant, limit=limit, before=before)


@router.get(
    "/events/stream",
    tags=["events"],
    summary="Live events as Server-Sent Events, filtered by plan and/or tenant",
    dependencies=read,
    response_class=StreamingResponse,
)
def event_stream(
    request: Request, plan: str | None = None, tenant: str | None = None
) -> StreamingResponse:
    last = request.headers.get("last-event-id")
    if last is not None and not re.fullmatch(r"\d{1,20}-\d{1,20}", last):
        last = None
    body = stream.events(settings(request).state_url, plan, tenant, last, request.is_disconnected)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)
