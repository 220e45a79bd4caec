"""Flower settings: loopback by default; anywhere else only behind authentication.

Flower 2.x binds every interface by default and has no login unless told. Flower runs this
file (tornado `parse_config_file`) after reading FLOWER_* variables and the command line,
so `--address`/`FLOWER_ADDRESS` and `--basic-auth`/`FLOWER_BASIC_AUTH`/`--auth` are known
here. Module-level names that match a Flower option become that option: helpers are
private (leading underscore).
"""

from __future__ import annotations

import os
from typing import Any

LOOPBACK = ("127.", "::1", "localhost")


def _option(name: str) -> Any:
    try:
        from tornado.options import options

        return getattr(options, name)
    except (ImportError, AttributeError):  # imported outside Flower (tests, tooling)
        return None


def _is_loopback(addr: str) -> bool:
    return addr.startswith(LOOPBACK) or addr in ("[::1]",)


def check_bind(
    addr: str, basic_auth: list[str] | None, auth: str | None, auth_provider: Any
) -> None:
    """Refuse a non-loopback bind without basic auth or OAuth (`--auth` + provider)."""
    if _is_loopback(addr):
        return
    if basic_auth and any(":" in entry for entry in basic_auth):
        return
    if auth and auth_provider:
        return
    raise SystemExit(
        f"flowerconfig: refusing to start Flower on {addr or 'every interface'} without "
        "authentication. Set FLOWER_BASIC_AUTH=user:password (or --basic-auth=user:password), "
        "or OAuth with --auth=REGEX --auth_provider=... (see docs/operators.md), "
        "or bind 127.0.0.1."
    )


address = _option("address") or os.environ.get("FLOWER_ADDRESS") or "127.0.0.1"
port = int(_option("port") or os.environ.get("FLOWER_PORT") or 5555)
check_bind(address, _option("basic_auth"), _option("auth"), _option("auth_provider"))
