"""`deployer demo`: the whole system on one machine, with nothing installed beforehand.

An embedded server (never a real Redis unless --redis-url is given), a real
`celery worker`, Flower on loopback, the simulated fleet, the canonical plan.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer

from deployer.cli.app import Exit, app, console, err

DEMO_PLAN = "examples/demo-plan.json"


def demo_plan() -> dict[str, Any]:
    text = resources.files("deployer").joinpath(DEMO_PLAN).read_text()
    plan: dict[str, Any] = json.loads(text)
    return plan


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wait_log(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text(errors="replace"):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def start_fleet(stack: ExitStack) -> str:
    """Start the simulated fleet; returns a one-line description."""
    from deployer.fleet import Fleet
    from deployer.settings import get_settings

    fleet = stack.enter_context(Fleet.from_settings(get_settings()))
    return str(fleet.describe())


def start_worker(stack: ExitStack, env: dict[str, str], workdir: Path) -> None:
    worker_log = workdir / "worker.log"
    args = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-n", "demo@%h", "-c", "2",
            "-Q", "deployer.control,deployer.stages", "--without-mingle", "--without-gossip",
            "-l", "INFO", "--logfile", str(worker_log)]  # fmt: skip
    worker = _spawn(args, workdir / "worker.out", env)
    stack.callback(_stop, worker)
    if not _wait_log(worker_log, "ready.", worker, 60):
        err.print(f"worker did not start; see {worker_log}")
        raise typer.Exit(Exit.ENDED_OTHERWISE)
    console.print(f"[bold]worker[/] demo@{socket.gethostname()} (2 processes), log {worker_log}")


def start_flower(stack: ExitStack, env: dict[str, str], workdir: Path, port: int) -> None:
    if not port or not _port_free(port):
        return
    args = [sys.executable, "-m", "celery", "-A", "tasks", "flower", f"--port={port}",
            "--address=127.0.0.1"]  # fmt: skip
    flower = _spawn(args, workdir / "flower.log", env)
    stack.callback(_stop, flower)
    console.print(f"[bold]flower[/] http://127.0.0.1:{port}")


@app.command()
def demo(
    redis_url: Annotated[
        str | None, typer.Option(help="Use this Redis instead of an embedded one.")
    ] = None,
    keep_running: Annotated[
        bool, typer.Option(help="Keep worker, Flower, fleet and server up until Ctrl-C.")
    ] = False,
    flower_port: Annotated[
        int, typer.Option(help="Flower port on 127.0.0.1 (0: no Flower).")
    ] = 5555,
    timeout: Annotated[float, typer.Option(help="Give up after S seconds.")] = 120.0,
) -> None:
    """Roll out the canonical demo plan end to end and exit 0 when it is done."""
    from deployer import keys
    from deployer.cli.progress import follow
    from deployer.client import DeployerClient
    from deployer.settings import get_settings, redact_url

    workdir = Path(tempfile.mkdtemp(prefix="deployer-demo-"))
    with ExitStack() as stack:
        if redis_url is None:
            from deployer.embedded import EmbeddedRedis

            server = EmbeddedRedis().start()
            stack.callback(server.stop)
            redis_url = server.url
            console.print(f"[bold]embedded server[/] {redis_url} (data in a temporary folder)")
        for name in ("DEPLOYER_BROKER_URL", "DEPLOYER_REDIS_URL", "DEPLOYER_TARGET_REDIS_URL"):
            os.environ[name] = redis_url
        get_settings.cache_clear()
        env = dict(os.environ)

        console.print(f"[bold]simulated fleet[/] {start_fleet(stack)}")

        start_worker(stack, env, workdir)
        start_flower(stack, env, workdir, flower_port)

        plan = demo_plan()
        plan["planId"] = f"demo-{int(time.time())}"
        for tenant in plan["tenants"]:
            tenant["planId"] = plan["planId"]
        client = DeployerClient(get_settings())
        client.submit(plan)
        console.print(
            f"submitted plan {plan['planId']} ({len(plan['tenants'])} tenants) "
            f"to {redact_url(redis_url)}"
        )
        from deployer.redis_client import client_for

        settings = get_settings()
        final = follow(client.store, plan["planId"], timeout)
        tenant_id = plan["tenants"][0]["tenantId"]
        hash_key = keys.config_hash(settings.key_prefix, tenant_id)
        console.print(f"\n[bold]HGETALL {hash_key}[/]")
        for field, value in sorted(client_for(settings.target_url).hgetall(hash_key).items()):
            console.print(f"  {field!s} = {value!s}")
        if final != "COMPLETED":
            err.print(f"plan ended {final or 'not in time'}; worker log: {workdir / 'worker.log'}")
        else:
            console.print(f"[green]plan {plan['planId']} COMPLETED[/]")
        if keep_running:
            _hold(redis_url)
        if final != "COMPLETED":
            raise typer.Exit(Exit.ENDED_OTHERWISE if final else Exit.TIMEOUT)


def _hold(redis_url: str) -> None:
    """--keep-running: stay in the foreground (the stack is torn down on Ctrl-C)."""
    from deployer.settings import redact_url

    console.print(
        f"[bold]--keep-running[/]: worker, Flower, fleet and server are up; try\n"
        f"  DEPLOYER_BROKER_URL={redact_url(redis_url)} deployer status <planId>\n"
        "Ctrl-C stops everything."
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping")
