"""Flower settings: loopback by default; anywhere else only behind real authentication.

Flower 2.x binds every interface by default and has no login unless told. Flower runs this
file (tornado `parse_config_file`) after reading FLOWER_* variables and the command line,
so `--address`/`FLOWER_ADDRESS` and `--basic-auth`/`FLOWER_BASIC_AUTH`/`--auth` are known
here. Module-level names that match a Flower option become that option: helpers are
private (leading underscore).

Refused at start, with what to set instead:
- a non-loopback address without basic auth or OAuth (the address is parsed: `localhost`
  resolved, `127.0.0.1.evil.com` is a host name, not loopback);
- a basic-auth entry with an empty user or password (`--basic-auth=:` would let anyone in);
- `FLOWER_UNAUTHENTICATED_API` true without authentication: Flower then serves its API
  (revoke, worker shutdown, ...) to anyone who can reach it, with `Access-Control-Allow-Origin: *`
  and no XSRF check, so any web page open in an operator's browser could call it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

_TRUE = ("y", "yes", "t", "true", "on", "1")  # Flower's own strtobool


def _option(name: str) -> Any:
    try:
        from tornado.options import options

        return getattr(options, name)
    except (ImportError, AttributeError):  # imported outside Flower (tests, tooling)
        return None


def _is_loopback(addr: str) -> bool:
    """Whether binding `addr` exposes Flower to this host only ('' = every interface)."""
    host = addr.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host.lower() == "localhost":
        try:
            found = {info[4][0] for info in socket.getaddrinfo(host, None)}
        except OSError:
            return False
        return bool(found) and all(_is_loopback(str(ip)) for ip in found)
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _unauthenticated_api() -> bool:
    return (os.environ.get("FLOWER_UNAUTHENTICATED_API") or "").strip().lower() in _TRUE


def _refuse(why: str) -> SystemExit:
    return SystemExit(f"flowerconfig: refusing to start Flower: {why} (see docs/operators.md)")


def check_bind(
    addr: str,
    basic_auth: list[str] | None,
    auth: str | None,
    auth_provider: Any,
    unauthenticated_api: bool = False,
) -> None:
    """Refuse empty credentials, an open API, and a non-loopback bind without basic auth
    or OAuth (`--auth` + provider)."""
    for entry in basic_auth or []:
        user, _, password = entry.partition(":")
        if not user.strip() or not password:
            raise _refuse(
                "a --basic-auth/FLOWER_BASIC_AUTH entry has an empty user or password; "
                "give user:password with both set"
            )
    authenticated = bool(basic_auth) or bool(auth and auth_provider)
    if unauthenticated_api and not authenticated:
        raise _refuse(
            "FLOWER_UNAUTHENTICATED_API opens the API (revoke, shutdown) to any client, "
            "any web page included; unset it and give API clients FLOWER_BASIC_AUTH credentials"
        )
    if _is_loopback(addr) or authenticated:
        return
    raise SystemExit(
        f"flowerconfig: refusing to start Flower on {addr or 'every interface'} without "
        "authentication. Set FLOWER_BASIC_AUTH=user:password (or --basic-auth=user:password), "
        "or OAuth with --auth=REGEX --auth_provider=... (see docs/operators.md), "
        "or bind 127.0.0.1."
    )


address = _option("address") or os.environ.get("FLOWER_ADDRESS") or "127.0.0.1"
port = int(_option("port") or os.environ.get("FLOWER_PORT") or 5555)
check_bind(
    address, _option("basic_auth"), _option("auth"), _option("auth_provider"),
    _unauthenticated_api(),
)  # fmt: skip
