"""What routes share: the store, the settings, the access checks (401 / 403), id checks and
the documented error shape."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Query, Request

from deployer import views
from deployer.client import DeployerClient
from deployer.errors import Code
from deployer.models import ID_PATTERN
from deployer.public import Problem as Problem  # re-exported: its first home
from deployer.settings import Settings
from deployer.state.store import Store
from deployer.web.answers import ApiError
from deployer.web.security import Access, access_of, auth_enabled, presented_token


def store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def client(request: Request) -> DeployerClient:
    return request.app.state.client  # type: ignore[no-any-return]


def settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def access(request: Request) -> Access:
    return access_of(presented_token(request), settings(request))


def holder(request: Request) -> str | None:
    """Who holds a stream, for the per-token cap: a digest of the token presented (never
    the token itself); None without a token configured (loopback: only the total counts)."""
    if not auth_enabled(settings(request)):
        return None
    token = presented_token(request) or ""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def can_read(request: Request) -> None:
    if access(request) < Access.READ:
        raise ApiError(
            401, Code.UNAUTHORIZED, "a token is required (Authorization: Bearer <token>)"
        )


def same_origin(request: Request) -> bool:
    """False for a request a browser sent from another site: a page elsewhere must not be
    able to make an operator's browser post commands (no CORS, and this check for simple
    form posts, which CORS does not stop). Clients that are not browsers send no Origin."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def can_command(request: Request) -> None:
    if not same_origin(request):
        raise ApiError(403, Code.CROSS_ORIGIN, "commands are not accepted from another site")
    level = access(request)
    if level < Access.READ:
        raise ApiError(
            401, Code.UNAUTHORIZED, "a token is required (Authorization: Bearer <token>)"
        )
    if level < Access.COMMAND:
        raise ApiError(403, Code.FORBIDDEN, "this token may read but not command")


READ = [Depends(can_read)]
COMMAND = [Depends(can_command)]
_ID = re.compile(ID_PATTERN)

Limit = Annotated[int, Query(ge=1, le=views.MAX_PAGE, description="Items per page.")]
Cursor = Annotated[
    str | None, Query(pattern=r"^\d{1,12}$", description="`nextCursor` of the previous page.")
]


def valid_id(value: str, what: str) -> str:
    """`value` if it is a valid plan or tenant id (full match), else 422 TARGET_INVALID."""
    if not _ID.fullmatch(value):
        raise ApiError(422, Code.TARGET_INVALID, f"{what}: not a valid id")
    return value


PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": text}
    for status, text in (
        (401, "UNAUTHORIZED: a token is required"),
        (403, "FORBIDDEN: a read-only token"),
        (404, "PLAN_NOT_FOUND, TASK_NOT_FOUND, UNKNOWN_COMMAND"),
        (409, "refused: the lifecycle's code (TASK_NOT_FAILED, ...), PLAN_CONFLICT"),
        (413, Code.BODY_TOO_LARGE),
        (422, "PLAN_INVALID, REQUEST_INVALID, TARGET_INVALID, STATUS_INVALID"),
    )
}
