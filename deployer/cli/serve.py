"""`deployer serve`: the HTTP API and the dashboard (deployer/web) on uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from deployer.cli.app import Exit, app, err
from deployer.errors import InsecureBind


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
) -> None:
    """HTTP API (/api/v1, /docs, /openapi.json), /healthz, /metrics and the live dashboard.

    Any address but loopback needs DEPLOYER_API_TOKEN (bearer) or the command refuses
    to start; DEPLOYER_API_READ_TOKEN may read but not command.
    """
    import uvicorn

    from deployer import tracing
    from deployer.settings import get_settings
    from deployer.web import create_app

    tracing.setup("deployer-api")
    from deployer.web.security import check_bind
    from deployer.web.server import uvicorn_config

    settings = get_settings()
    try:
        check_bind(host, settings)
    except InsecureBind as exc:
        err.print(f"[bold red]refused[/] {exc.code}: {exc.message}")
        raise typer.Exit(Exit.REFUSED) from None
    config = uvicorn_config(
        create_app(settings), settings, host=host, port=port, log_level="info", access_log=False
    )
    uvicorn.Server(config).run()
