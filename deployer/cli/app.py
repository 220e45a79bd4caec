"""The typer application and what every command shares: console, exit codes, JSON output."""

from __future__ import annotations

import json
import sys
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console

if TYPE_CHECKING:
    from deployer.archive.store import Archive
    from deployer.client import DeployerClient
    from deployer.state.store import Store

app = typer.Typer(
    name="deployer",
    help="Roll out per-tenant configuration through Celery, safely and observably.",
    epilog="Exit codes: 0 what was asked for happened (or was already in effect); "
    "1 it ran and ended otherwise (FAILED, CANCELLED, ...); "
    "2 refused (unreadable plan file, validation error, illegal transition: code printed); "
    "3 --timeout passed, or no worker picked the plan up.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)


class Exit(IntEnum):
    """Public exit codes (docs/contracts.md §6)."""

    OK = 0
    ENDED_OTHERWISE = 1
    REFUSED = 2
    TIMEOUT = 3


def client() -> DeployerClient:
    """What a verb submits, commands and reads through (`.store` for the task hashes).
    A verb that acts through it is traced when the OTEL_* variables ask (deployer/tracing.py)."""
    from deployer import tracing
    from deployer.client import DeployerClient
    from deployer.settings import get_settings

    tracing.setup("deployer-cli")

    return DeployerClient(get_settings())


def store() -> Store:
    """The state store alone, for verbs that only read it (no Celery app, no broker)."""
    from deployer.redis_client import state_store
    from deployer.settings import get_settings

    return state_store(get_settings())


def archive() -> Archive | None:
    """The deployment archive for reading; None while nothing was ever archived (a read
    never creates the embedded database)."""
    from deployer.archive.store import Archive
    from deployer.settings import get_settings

    return Archive.open_existing(get_settings())


def print_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


def refuse(
    code: str, message: str, errors: list[dict[str, str]] | None = None, as_json: bool = False
) -> NoReturn:
    if as_json:
        print_json({"ok": False, "code": code, "message": message, "errors": errors or []})
    else:
        err.print(f"[bold red]refused[/] {code}: {message}", soft_wrap=True)  # one line
        for e in (errors or [])[:50]:
            err.print(f"  [red]{e['field']}[/]: {e['reason']}")
        if errors and len(errors) > 50:
            err.print(f"  ... and {len(errors) - 50} more")
    raise typer.Exit(Exit.REFUSED)


def read_plan_file(path: Path, as_json: bool = False) -> str:
    """The text of a plan file ('-': stdin); a missing or unreadable one is a one-line
    refusal (exit 2), never a traceback. Every verb that takes a plan file reads it here."""
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        why = exc.strerror or str(exc)
    except UnicodeDecodeError as exc:
        why = f"not UTF-8 ({exc.reason})"
    from deployer.errors import PlanUnreadable

    refuse(PlanUnreadable.code, f"cannot read {path}: {why}", as_json=as_json)
