"""`deployer metrics`: a Prometheus endpoint over deployer's Redis state."""

from __future__ import annotations

from typing import Annotated

import typer

from deployer.cli.app import app, console, err

LOOPBACK = ("127.", "::1", "localhost")


@app.command()
def metrics(
    port: Annotated[int, typer.Option(help="Port of the /metrics endpoint.")] = 9808,
    address: Annotated[
        str, typer.Option(help="Interface to bind (loopback unless you say otherwise).")
    ] = "127.0.0.1",
    recent_plans: Annotated[int, typer.Option(help="Plans (newest first) to export.")] = 50,
) -> None:
    """Serve Prometheus metrics: tasks by status per plan, stage durations, HealthCheck
    attempts, rollbacks, lease conflicts (docs/operators.md)."""
    from deployer.metrics import run_forever, serve
    from deployer.redis_client import client_for
    from deployer.settings import get_settings, redact_url

    settings = get_settings()
    if not address.startswith(LOOPBACK):
        err.print(
            f"[yellow]note[/]: metrics on {address} are readable by anyone who can reach it "
            "(plan ids and counts; no secrets). Put it behind your scraper's network policy."
        )
    serve(client_for(settings.state_url), address, port, recent_plans)
    console.print(
        f"metrics on http://{address}:{port}/metrics from {redact_url(settings.state_url)}",
        highlight=False,
    )
    try:
        run_forever()
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
