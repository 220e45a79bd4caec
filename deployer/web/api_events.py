"""`/api/v1/events`: the filtered history (deployer/web/history.py) and the live SSE
stream (deployer/web/stream.py)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from deployer.public import EventPage
from deployer.web import history, stream
from deployer.web.answers import ApiError
from deployer.web.deps import PROBLEMS, READ, Problem, holder, store

router = APIRouter(prefix="/api/v1", responses=PROBLEMS, tags=["events"])


@router.get(
    "/events",
    summary="Event history, newest first, filtered by plan and/or tenant",
    dependencies=READ,
    response_model=EventPage,
    response_model_exclude_unset=True,
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
    summary="Live events as Server-Sent Events, filtered by plan and/or tenant",
    dependencies=READ,
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "text/event-stream: `id`, `event` (the type), `data` (the event JSON)",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        429: {"model": Problem, "description": "TOO_MANY_STREAMS: this token's streams"},
        503: {"model": Problem, "description": "STREAMS_FULL: the server's streams"},
    },
)
async def event_stream(
    request: Request, plan: str | None = None, tenant: str | None = None
) -> StreamingResponse:
    last = request.headers.get("last-event-id")
    if last is not None and not re.fullmatch(r"\d{1,20}-\d{1,20}", last):
        last = None
    hub: stream.Hub = request.app.state.hub
    try:
        sub = await hub.subscribe(holder(request), plan, tenant, last)
    except stream.StreamRefused as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        hub.events(sub),
        media_type="text/event-stream",
        headers=headers,
        # also when the client left before the stream began (the generator never ran)
        background=BackgroundTask(hub.release, sub),
    )
