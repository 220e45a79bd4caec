"""The `deployer` command line (typer + rich); each verb family in its own module."""

from __future__ import annotations

from deployer.cli import (  # noqa: F401  (commands)
    commands,
    demo,
    diffs,
    fleet,
    metrics,
    plans,
    serve,
)
from deployer.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
