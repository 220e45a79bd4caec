"""What routes share: the store, the settings, and the access checks (401 / 403)."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import Request

from deployer.settings import Settings
from deployer.store import Store
from deployer.web.app import ApiError
from deployer.web.security import Access, access_of, presented_token


def store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def access(request: Request) -> Access:
    return access_of(presented_token(request), settings(request))


def can_read(request: Request) -> None:
    if access(request) < Access.READ:
        raise ApiError(401, "UNAUTHORIZED", "a token is required (Authorization: Bearer <token>)")


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
        raise ApiError(403, "CROSS_ORIGIN", "commands are not accepted from another site")
    level = access(request)
    if level < Access.READ:
        raise ApiError(401, "UNAUTHORIZED", "a token is required (Authorization: Bearer <token>)")
    if level < Access.COMMAND:
        raise ApiError(403, "FORBIDDEN", "this token may read but not command")
