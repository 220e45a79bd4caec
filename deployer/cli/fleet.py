"""`deployer fleet`: serve the simulated fleet until interrupted.

With no options it serves exactly the instances of the settings (DEPLOYER_INSTANCES, by
default the ones `examples/` plans are verified against), for any tenant id.
"""

from __future__ import annotations

import json
import signal
import threading
from typing import Annotated

import typer

from deployer.cli.app import Exit, app, console, err

FAULTS = ("never", "500", "hang", "lose-broadcast", "reject")


@app.command()
def fleet(
    delay: Annotated[
        float | None,
        typer.Option(
            help="Seconds before an instance reports a new version "
            "(default DEPLOYER_FLEET_DELAY_SECONDS)."
        ),
    ] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(help=f"Inject a fault: {', '.join(FAULTS)} (repeatable)."),
    ] = None,
    tenant_prefix: Annotated[
        str, typer.Option(help="Apply --delay/--fault only to tenants with this id prefix.")
    ] = "",
    only: Annotated[
        list[str] | None,
        typer.Option(help="Converge only on these instances (host:port, repeatable)."),
    ] = None,
    acks: Annotated[
        bool | None,
        typer.Option(
            "--acks/--no-acks",
            help="Publish an ack when an instance makes a version visible "
            "(default DEPLOYER_FLEET_ACKS; channel DEPLOYER_ACK_CHANNEL).",
        ),
    ] = None,
) -> None:
    """Run real HTTP servers + pub/sub listeners standing in for the services."""
    from deployer.fleet import Behaviour, Fleet
    from deployer.settings import get_settings

    settings = get_settings()
    unknown = sorted(set(fault or []) - set(FAULTS))
    if unknown:
        err.print(f"[bold red]refused[/] unknown fault(s) {unknown}; known: {list(FAULTS)}")
        raise typer.Exit(Exit.REFUSED)
    faults = set(fault or [])
    rule = Behaviour(
        delay=settings.fleet_delay_seconds if delay is None else delay,
        never="never" in faults,
        status=500 if "500" in faults else None,
        hang="hang" in faults,
        lose_broadcast="lose-broadcast" in faults,
        reject="reject" in faults,
        only=frozenset(only) if only else None,
    )
    default = rule if not tenant_prefix else Behaviour(delay=settings.fleet_delay_seconds)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with Fleet.from_settings(settings, default=default, acks=acks) as running:
            if tenant_prefix:
                running.behave(tenant_prefix, rule)
            console.print(f"[bold]simulated fleet[/] {running.describe()}")
            if faults or only:
                console.print(f"faults for tenants '{tenant_prefix}*': {rule}")
            console.print(json.dumps(running.addresses))
            try:
                while not stop.wait(1.0):
                    pass
            except KeyboardInterrupt:
                pass
    except OSError as exc:
        err.print(f"[bold red]cannot serve the fleet[/]: {exc}")
        raise typer.Exit(Exit.ENDED_OTHERWISE) from None
