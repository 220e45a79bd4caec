"""`/api/v1/plans`: submit (as the `deployer.submit_plan` task does), list, read, schema.

Submit calls the same `Planner.submit` as the task: same validation, field errors and
idempotency. Its answer's code picks the HTTP status: 201 accepted, 200 the same plan again,
409 PLAN_CONFLICT, 422 PLAN_INVALID.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from deployer.archive.views import plan_view as plan_anywhere
from deployer.archive.views import plans_page
from deployer.errors import Code
from deployer.intake import SNIFF_BYTES, shape_refusal, sniff_plan_id
from deployer.jsonshape import Meter
from deployer.models import Plan
from deployer.public import PlanPage, PlanView, SubmitResult, conform
from deployer.web.answers import ApiError, RedactedJSON
from deployer.web.api_history import HistoryCursor, archive_of
from deployer.web.deps import COMMAND, PROBLEMS, READ, Limit, settings, store, valid_id

router = APIRouter(prefix="/api/v1", responses=PROBLEMS, tags=["plans"])

SUBMIT_STATUS: dict[str, int] = {
    Code.PLAN_CONFLICT: 409,
    Code.PLAN_INVALID: 422,
    Code.INTERNAL_ERROR: 500,
}


def submit_status(answer: dict[str, Any]) -> int:
    """201 for a plan accepted now, 200 for a duplicate of an accepted one, else by code."""
    if answer.get("ok"):
        duplicate = answer.get("duplicate") or answer.get("code") == Code.ALREADY_SUBMITTED
        return 200 if duplicate else 201
    return SUBMIT_STATUS.get(str(answer.get("code")), 422)


def _planner() -> Any:
    from tasks.runtime import planner  # the workers' own planner (it sends the chains)

    return planner()


@router.post(
    "/plans",
    summary="Submit a plan (as deployer.submit_plan does)",
    status_code=201,
    dependencies=COMMAND,
    response_model=SubmitResult,
    responses={
        200: {"model": SubmitResult, "description": "the same plan was already accepted"},
        500: {"model": SubmitResult, "description": "INTERNAL_ERROR"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A plan; its full JSON Schema is GET /api/v1/schema.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
    },
)
async def submit_plan(request: Request) -> RedactedJSON:
    s = settings(request)
    meter = Meter(s.max_message_depth, s.max_message_elements)
    chunks: list[bytes] = []
    head = b""  # where the planId is looked for when the plan is refused unparsed
    async for chunk in request.stream():
        # Measured while it arrives: a body that would parse too deep or into too many
        # values is refused there, unread beyond (the byte limit is BodyLimit's).
        chunks.append(chunk)
        head += chunk[: SNIFF_BYTES - len(head)]
        if meter.feed(chunk).exceeded:
            refusal = shape_refusal(meter.shape(), s, sniff_plan_id(head))
            assert refusal is not None
            answer = await run_in_threadpool(_planner().refuse, refusal)
            return RedactedJSON(conform(SubmitResult, answer), submit_status(answer))
    text = b"".join(chunks).decode("utf-8", "replace")
    del chunks
    answer = await run_in_threadpool(_planner().submit, text)
    return RedactedJSON(conform(SubmitResult, answer), submit_status(answer))


@router.get(
    "/schema",
    summary="JSON Schema of a plan",
    dependencies=READ,
    response_model=dict[str, Any],
    response_description="A JSON Schema (draft 2020-12) of a plan, as `deployer schema` prints",
)
def plan_schema() -> JSONResponse:
    # a schema names fields (`password` may be one): it holds no values to redact
    return JSONResponse(Plan.model_json_schema(by_alias=True))


@router.get(
    "/plans",
    summary="Plans, live and archived, newest first",
    dependencies=READ,
    response_model=PlanPage,
    response_model_exclude_unset=True,
)
def list_plans(
    request: Request,
    limit: Limit = 50,
    cursor: HistoryCursor = None,
    status: Annotated[str | None, Query(pattern=r"^[A-Z_]{1,32}$")] = None,
    since: Annotated[int | None, Query(ge=0, description="created since (ms epoch)")] = None,
) -> dict[str, Any]:
    return plans_page(store(request), archive_of(request), status=status, since_ms=since,
                      limit=limit, cursor=cursor)  # fmt: skip


@router.get(
    "/plans/{planId}",
    summary="One plan (the JSON of `deployer status P --json`)",
    dependencies=READ,
    response_model=PlanView,
    response_model_exclude_unset=True,
)
def get_plan(
    request: Request,
    planId: str,
    sample: Annotated[int, Query(ge=0, le=100)] = 20,
) -> dict[str, Any]:
    view = plan_anywhere(store(request), archive_of(request), valid_id(planId, "planId"), sample)
    if view is None:
        raise ApiError(404, Code.PLAN_NOT_FOUND, f"no plan {planId}")
    return view
