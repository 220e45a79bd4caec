"""The ASGI application: answers as redacted JSON with stable codes, size-limited bodies,
authentication, and the API, operations and dashboard routes mounted together.

Every answer, error or not, is `{"ok": false, "code", "message", ...}` on failure (the
shape the Celery tasks and the CLI use), so a client handles one format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployer.client import DeployerClient
from deployer.errors import Code
from deployer.settings import Settings, get_settings
from deployer.web.answers import ApiError as ApiError  # re-exported: their first home
from deployer.web.answers import RedactedJSON as RedactedJSON
from deployer.web.answers import error as error
from deployer.web.security import auth_enabled
from deployer.web.stream import Hub

HERE = Path(__file__).resolve().parent
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


class BodyLimit:
    """Refuse request bodies over `limit` bytes (413 BODY_TOO_LARGE), whether announced by
    Content-Length or streamed chunked; nothing over the limit is buffered."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ApiError(413, Code.BODY_TOO_LARGE, f"request body over {self.limit} bytes")
            return message

        await self.app(scope, limited, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error(413, Code.BODY_TOO_LARGE, f"request body over {self.limit} bytes")
        await response(scope, receive, send)


def _field_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    out = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path")]
        out.append({"field": ".".join(loc) or "(request)", "reason": str(e.get("msg", ""))})
    return out


def create_app(settings: Settings | None = None) -> FastAPI:
    from deployer.web import (
        api_commands,
        api_events,
        api_history,
        api_plans,
        api_tasks,
        docs,
        ops,
        pages,
    )

    settings = settings or get_settings()
    hub = Hub(
        settings.state_url,
        settings.api_max_streams,
        settings.api_max_streams_per_token,
        settings=settings,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await hub.close()

    app = FastAPI(
        lifespan=lifespan,
        title="deployer",
        version="1",
        description="Plans, tasks, commands and events of deployer (the same operations "
        "as the CLI and the Celery tasks). Errors: {ok: false, code, message}.",
        default_response_class=RedactedJSON,
        docs_url=None,  # deployer/web/docs.py: local files, behind the token
        openapi_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.client = DeployerClient(settings)  # commands, as the CLI runs them
    app.state.store = app.state.client.store
    app.state.hub = hub  # the one reader of the event stream (deployer/web/stream.py)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> RedactedJSON:
        return error(exc.status, exc.code, exc.message, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> RedactedJSON:
        return error(422, Code.REQUEST_INVALID, "invalid request", errors=_field_errors(exc))

    @app.exception_handler(redis.RedisError)
    async def _redis_down(request: Request, exc: redis.RedisError) -> RedactedJSON:
        return error(503, Code.REDIS_UNREACHABLE, f"state Redis unreachable: {type(exc).__name__}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> RedactedJSON:
        code = {404: Code.NOT_FOUND, 405: Code.METHOD_NOT_ALLOWED}.get(
            exc.status_code, Code.HTTP_ERROR
        )
        return error(exc.status_code, code, str(exc.detail))

    for module in (api_plans, api_tasks, api_commands, api_events, api_history, ops, pages):
        app.include_router(module.router)
    docs.mount(app, HERE / "static")
    if not auth_enabled(settings):
        # Without a token the server is loopback-only; a Host header naming anything else is
        # a DNS-rebinding page reaching it through the operator's browser.
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_NAMES)
    # the outermost layer, so no route ever reads more than the limit
    app.add_middleware(BodyLimit, limit=settings.max_plan_bytes)
    return app
