"""`/api/v1/.../tasks`: pages of a plan's tasks, one task, a tenant's tasks (read models
from deployer/views.py; a 100,000-tenant plan is read a page at a time)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from deployer import views
from deployer.errors import Code
from deployer.models import TaskStatus, task_id_for
from deployer.public import TaskPage, TaskView, TenantTasks, WavePage
from deployer.web.answers import ApiError
from deployer.web.deps import PROBLEMS, READ, Cursor, Limit, store, valid_id

router = APIRouter(prefix="/api/v1", responses=PROBLEMS, tags=["tasks"])


@router.get(
    "/plans/{planId}/tasks",
    summary="A page of a plan's tasks, optionally of one status or matching a tenant id",
    dependencies=READ,
    response_model=TaskPage,
    response_model_exclude_unset=True,
)
def plan_tasks(
    request: Request,
    planId: str,
    status: Annotated[str | None, Query(description="A task status, e.g. FAILED.")] = None,
    q: Annotated[str | None, Query(max_length=128, description="Tenant id contains.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    wave: Annotated[int | None, Query(ge=0, description="Only this wave's tenants.")] = None,
) -> dict[str, Any]:
    s = store(request)
    if status is not None:
        try:
            status = TaskStatus(status.upper()).value
        except ValueError:
            raise ApiError(422, Code.STATUS_INVALID, f"unknown task status {status}") from None
    if not s.plan_exists(valid_id(planId, "planId")):
        raise ApiError(404, Code.PLAN_NOT_FOUND, f"no plan {planId}")
    return views.task_page(
        s, planId, status=status, search=q, limit=limit, cursor=cursor, wave=wave
    )


@router.get(
    "/plans/{planId}/waves/{wave}/tenants",
    summary="Which tenants are in a wave (fixed at submit), a page at a time, with the wave",
    dependencies=READ,
    response_model=WavePage,
    response_model_exclude_unset=True,
)
def wave_tenants(
    request: Request,
    planId: str,
    wave: int,
    status: Annotated[str | None, Query(description="A task status, e.g. FAILED.")] = None,
    q: Annotated[str | None, Query(max_length=128, description="Tenant id contains.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    s = store(request)
    waves = views.wave_count(s, valid_id(planId, "planId"))
    if waves is None:
        raise ApiError(404, Code.PLAN_NOT_FOUND, f"no plan {planId}")
    if not 0 <= wave < waves:
        raise ApiError(404, Code.NOT_FOUND, f"plan {planId} has no wave {wave}")
    if status is not None:
        try:
            status = TaskStatus(status.upper()).value
        except ValueError:
            raise ApiError(422, Code.STATUS_INVALID, f"unknown task status {status}") from None
    return views.wave_page(s, planId, wave, status=status, search=q, limit=limit, cursor=cursor)


@router.get(
    "/plans/{planId}/tenants/{tenantId}",
    summary="One (plan, tenant) task: stages, checkpoint, progress, failure, written hash",
    dependencies=READ,
    response_model=TaskView,
    response_model_exclude_unset=True,
)
def plan_tenant_task(request: Request, planId: str, tenantId: str) -> dict[str, Any]:
    task_id = task_id_for(valid_id(planId, "planId"), valid_id(tenantId, "tenantId"))
    return _task(request, task_id, f"no task for tenant {tenantId} in plan {planId}")


@router.get(
    "/tasks/{taskId}",
    summary="One task by id",
    dependencies=READ,
    response_model=TaskView,
    response_model_exclude_unset=True,
)
def get_task(request: Request, taskId: str) -> dict[str, Any]:
    return _task(request, taskId, f"no task {taskId}")


def _task(request: Request, task_id: str, missing: str) -> dict[str, Any]:
    view = views.task_view(store(request), task_id)
    if view is None:
        raise ApiError(404, Code.TASK_NOT_FOUND, missing)
    return view


@router.get(
    "/tenants/{tenantId}/tasks",
    summary="Every task of a tenant (newest plan first) and which one is its latest",
    dependencies=READ,
    response_model=TenantTasks,
    response_model_exclude_unset=True,
)
def tenant_tasks(request: Request, tenantId: str) -> dict[str, Any]:
    out = views.tenant_tasks(store(request), valid_id(tenantId, "tenantId"))
    if not out["items"] and out["latestTaskId"] is None:
        raise ApiError(404, Code.TASK_NOT_FOUND, f"no task for tenant {tenantId}")
    return out
