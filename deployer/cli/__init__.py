"""The `deployer` command line (typer + rich); each verb family in its own module."""

from __future__ import annotations

from deployer.cli import control, demo, fleet, metrics, plans  # noqa: F401  (register commands)
from deployer.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
