"""The API's description and the files pages load: `/openapi.json`, `/docs` (Swagger UI from
local files, no CDN) and `/static/*`, behind the same token as everything else.

With a token configured, operators expect nothing but `/healthz` to answer without it: the
OpenAPI document maps every route and parameter, and the dashboard's files name its API. A
browser holds the token as the cookie `/login` sets, which it sends with the page's own
requests for scripts, styles and the OpenAPI document, so the dashboard and the docs work.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send

from deployer.errors import Code
from deployer.web.answers import error
from deployer.web.deps import READ
from deployer.web.security import Access, access_of, presented_token

router = APIRouter(include_in_schema=False)


@router.get("/openapi.json", dependencies=READ)
def openapi(request: Request) -> JSONResponse:
    app: FastAPI = request.app
    return JSONResponse(app.openapi())


@router.get("/docs", dependencies=READ)
def docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="deployer API",
        swagger_js_url="/static/swagger/swagger-ui-bundle.js",
        swagger_css_url="/static/swagger/swagger-ui.css",
        swagger_favicon_url="/static/swagger/favicon-32x32.png",
    )


class ProtectedFiles(StaticFiles):
    """StaticFiles that answer only a reader (Bearer token or the dashboard's cookie)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            settings = scope["app"].state.settings
            if access_of(presented_token(HTTPConnection(scope)), settings) < Access.READ:
                message = "a token is required (Authorization: Bearer <token>)"
                await error(401, Code.UNAUTHORIZED, message)(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def mount(app: FastAPI, static: Path) -> None:
    """The docs routes and the file trees (Swagger UI's, the dashboard's)."""
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

    app.include_router(router)
    app.mount("/static/swagger", ProtectedFiles(directory=swagger_ui_path), name="swagger")
    app.mount("/static", ProtectedFiles(directory=static), name="static")
