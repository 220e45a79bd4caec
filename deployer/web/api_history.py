"""`/api/v1/tenants/{tenantId}/history` and `/api/v1/archive/...`: the deployment history,
live and archived (deployer/archive/views.py), in typed models (the OpenAPI shows them)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from deployer.archive.store import Archive
from deployer.archive.views import archived_task_view, tenant_history
from deployer.errors import Code
from deployer.models import task_id_for
from deployer.web.answers import ApiError
from deployer.web.deps import PROBLEMS, READ, Limit, settings, store, valid_id

router = APIRouter(prefix="/api/v1", responses=PROBLEMS, tags=["history"])

#: `nextCursor` of a history page: "createdAtMs:id" of the last row shown.
HistoryCursor = Annotated[
    str | None,
    Query(pattern=r"^\d{1,15}:\S{1,1200}$", description="`nextCursor` of the previous page."),
]


def archive_of(request: Request) -> Archive | None:
    """The archive for reading (None while nothing was ever archived)."""
    return Archive.open_existing(settings(request))


class Deployment(BaseModel):
    """One deployment of a tenant: a task of a plan, live or archived."""

    taskId: str
    planId: str
    tenantId: str
    status: str | None = Field(None, examples=["COMPLETED"])
    planVersion: int | None = None
    runKind: str | None = Field(None, examples=["FORWARD"])
    createdAt: str | None = None
    startedAt: str | None = None
    endedAt: str | None = None
    archived: bool = Field(description="read from the archive: history, no commands")


class TenantHistory(BaseModel):
    """Every deployment of the tenant, newest first, a page at a time."""

    tenantId: str
    latestTaskId: str | None = Field(None, description="the task `--tenant` commands act on")
    items: list[Deployment]
    nextCursor: str | None = None


class ArchivedTask(BaseModel):
    """A task as the archive keeps it: what it did, when, its stage timeline and the config
    it deployed (secrets redacted)."""

    taskId: str
    planId: str
    tenantId: str
    status: str
    planVersion: int | None = None
    runKind: str | None = None
    runId: str | None = None
    failure: dict[str, Any] | None = None
    retryCount: int = 0
    cancelledBy: str | None = None
    supersededBy: str | None = None
    createdAt: str | None = None
    startedAt: str | None = None
    endedAt: str | None = None
    updatedAt: str | None = None
    timeline: list[dict[str, Any]]
    config: dict[str, Any] | None = None
    archived: bool = True
    commands: list[str] = Field(default_factory=list)


@router.get(
    "/tenants/{tenantId}/history",
    summary="Every deployment of a tenant, live and archived, newest first",
    dependencies=READ,
    response_model=TenantHistory,
)
def get_tenant_history(
    request: Request, tenantId: str, limit: Limit = 50, cursor: HistoryCursor = None
) -> dict[str, Any]:
    tenant = valid_id(tenantId, "tenantId")
    return tenant_history(store(request), archive_of(request), tenant, limit, cursor)


@router.get(
    "/archive/plans/{planId}/tenants/{tenantId}",
    summary="A task of an archived plan",
    dependencies=READ,
    response_model=ArchivedTask,
)
def get_archived_task(request: Request, planId: str, tenantId: str) -> dict[str, Any]:
    archive = archive_of(request)
    task_id = task_id_for(valid_id(planId, "planId"), valid_id(tenantId, "tenantId"))
    view = archived_task_view(archive, task_id) if archive else None
    if view is None:
        raise ApiError(404, Code.TASK_NOT_FOUND, f"no archived task {task_id}")
    return view
