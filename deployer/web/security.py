"""Who may use the API: loopback-only unless a token is set; read tokens cannot command.

Flower's lesson (it binds every interface by default): the safe default is decided at start
(`check_bind`), not left to a reverse proxy. Tokens arrive as `Authorization: Bearer T`, or
for the dashboard in a browser as the `deployer_token` cookie set by `/login?token=T`
(HttpOnly, SameSite=Strict, so another site cannot make the browser send it).
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from enum import IntEnum

from starlette.requests import HTTPConnection

from deployer.errors import InsecureBind
from deployer.settings import Settings

COOKIE = "deployer_token"


class Access(IntEnum):
    NONE = 0
    READ = 1
    COMMAND = 2


def is_loopback(host: str) -> bool:
    """True only for loopback addresses (parsed, so `127.0.0.1.evil.com` is not one) and
    for `localhost` when every address it resolves to is loopback."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    if host != "localhost":
        return False
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def check_bind(host: str, settings: Settings) -> None:
    """Refuse to serve on a non-loopback address without DEPLOYER_API_TOKEN."""
    if not is_loopback(host) and settings.api_token is None:
        raise InsecureBind(
            f"refusing to listen on {host} without a token: set DEPLOYER_API_TOKEN "
            "(clients send 'Authorization: Bearer <token>') or bind 127.0.0.1"
        )


def auth_enabled(settings: Settings) -> bool:
    return settings.api_token is not None or settings.api_read_token is not None


def presented_token(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return conn.cookies.get(COOKIE)


def access_of(token: str | None, settings: Settings) -> Access:
    """What `token` allows; everything when no token is configured (loopback only)."""
    if not auth_enabled(settings):
        return Access.COMMAND
    if not token:
        return Access.NONE
    given = token.encode()
    if settings.api_token and hmac.compare_digest(
        given, settings.api_token.get_secret_value().encode()
    ):
        return Access.COMMAND
    if settings.api_read_token and hmac.compare_digest(
        given, settings.api_read_token.get_secret_value().encode()
    ):
        return Access.READ
    return Access.NONE
