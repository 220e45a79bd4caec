"""The dashboard: server-rendered pages (Jinja2) that a small script keeps live from the SSE
stream. No Node build and no CDN: the script and the styles are files in static/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from deployer import views
from deployer.archive import views as history
from deployer.errors import Code
from deployer.models import TaskStatus, task_id_for
from deployer.web.answers import ApiError
from deployer.web.api_history import archive_of
from deployer.web.deps import can_read, settings, store
from deployer.web.security import COOKIE, Access, access_of

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")
read = [Depends(can_read)]

#: Button labels; which buttons a page shows is the view's `commands` (legal right now).
LABELS = {c: c.capitalize() for c in views.PLAN_COMMANDS} | {"budget": "Budget…"}


def flower_search(flower_url: str) -> str:
    """Flower's task list searched for one tenant, minus the tenant id (appended URL-encoded).

    Flower names each stage task `stage <stage> · <tenantId>` and pre-fills its search from
    `?name=` (a substring match on that name), so the link lists the tenant's stage tasks.
    """
    return f"{flower_url.rstrip('/')}/tasks?name="


def _page(request: Request, name: str, **context: Any) -> HTMLResponse:
    flower = settings(request).flower_url
    base = {
        "statuses": [s.value for s in TaskStatus],
        "flower": flower,
        "flower_search": flower_search(flower),
    }
    return templates.TemplateResponse(request, name, {**base, **context})


@router.get("/login")
def login(request: Request, token: str) -> Response:
    """Trade a token for an HttpOnly, SameSite=Strict cookie the dashboard's requests carry."""
    if access_of(token, settings(request)) is Access.NONE:
        raise ApiError(401, Code.UNAUTHORIZED, "unknown token")
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
    return response


@router.get("/", response_class=HTMLResponse, dependencies=read)
def plans(request: Request, cursor: str | None = None) -> HTMLResponse:
    page = history.plans_page(store(request), archive_of(request), limit=50, cursor=cursor)
    return _page(request, "plans.html", page=page)


@router.get("/plans/{plan_id}", response_class=HTMLResponse, dependencies=read)
def plan(request: Request, plan_id: str) -> HTMLResponse:
    view = history.plan_view(store(request), archive_of(request), plan_id, sample=0)
    if view is None:
        raise ApiError(404, Code.PLAN_NOT_FOUND, f"no plan {plan_id}")
    if view.get("archived"):
        archive = archive_of(request)
        assert archive is not None
        rows = [history.archived_task_row(t) for t in archive.tasks(plan_id, 0, views.MAX_PAGE)]
        return _page(request, "archived_plan.html", plan=view, tasks=rows)
    return _page(request, "plan.html", plan=view, labels=LABELS)


@router.get("/tenants/{tenant_id}/history", response_class=HTMLResponse, dependencies=read)
def tenant_history(request: Request, tenant_id: str, cursor: str | None = None) -> HTMLResponse:
    page = history.tenant_history(store(request), archive_of(request), tenant_id, 100, cursor)
    return _page(request, "history.html", page=page)


@router.get("/plans/{plan_id}/tenants/{tenant_id}", response_class=HTMLResponse, dependencies=read)
def task(request: Request, plan_id: str, tenant_id: str) -> HTMLResponse:
    view = views.plan_task_view(store(request), plan_id, tenant_id)
    if view is None:
        archive = archive_of(request)
        stored = history.archived_task_view(archive, task_id_for(plan_id, tenant_id)) if (
            archive) else None  # fmt: skip
        if stored is not None:
            return _page(request, "archived_task.html", task=stored)
    if view is None:
        raise ApiError(
            404, Code.TASK_NOT_FOUND, f"no task for tenant {tenant_id} in plan {plan_id}"
        )
    return _page(request, "task.html", task=view, labels=LABELS)
