"""`deployer demo`: the whole system on one machine, with nothing installed beforehand.

An embedded server (never a real Redis unless --redis-url is given), a real
`celery worker`, Flower on loopback, the simulated fleet, the canonical plan.
"""

from __future__ import annotations

import errno
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
from typing import Annotated, Any, NoReturn

import typer

from deployer.cli.app import Exit, app, console, err

DEMO_PLAN = "examples/demo-plan.json"


def demo_plan() -> dict[str, Any]:
    text = resources.files("deployer").joinpath(DEMO_PLAN).read_text()
    plan: dict[str, Any] = json.loads(text)
    return plan


#: Flower's port when --flower-port is not given (another is picked when it is taken).
FLOWER_PORT = 5555


def _bindable(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now (as Flower would: reusing a
    port in TIME_WAIT, never one another socket holds)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _stop_here(message: str, code: Exit = Exit.REFUSED) -> NoReturn:
    """An expected condition ends the demo in one line (never a traceback)."""
    err.print(f"[bold red]deployer demo[/]: {message}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def choose_flower_port(requested: int | None) -> int:
    """The port Flower will use: the one asked for (refused in one line when taken), else
    5555, else (taken) a free one, said in one line."""
    if requested is not None:
        if requested and not _bindable(requested):
            _stop_here(
                f"port {requested} on 127.0.0.1 is taken; choose another with "
                "--flower-port PORT (0: no Flower)"
            )
        return requested
    if _bindable(FLOWER_PORT):
        return FLOWER_PORT
    port = _free_port()
    console.print(
        f"[yellow]port {FLOWER_PORT} is taken[/]: Flower listens on {port} instead "
        "(--flower-port PORT chooses, 0: no Flower)",
        soft_wrap=True,
    )
    return port


def _wait_log(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and needle in path.read_text(errors="replace"):
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
    """Start the simulated fleet, and point DEPLOYER_INSTANCES (read by the worker started
    next) at it; returns a one-line description.

    On the default addresses (settings.DEFAULT_INSTANCES) when they are free; when one is
    taken, on free ports, said in one line. Addresses set in DEPLOYER_INSTANCES are the
    operator's choice: a taken one ends the demo in one line."""
    from deployer.fleet import Fleet  # the demo's parts load when it runs, not with the CLI
    from deployer.settings import DEFAULT_INSTANCES, get_settings

    settings = get_settings()
    try:
        fleet = Fleet.from_settings(settings)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or settings.instances != DEFAULT_INSTANCES:
            _stop_here(
                f"cannot serve the simulated fleet: {exc.strerror}; set DEPLOYER_INSTANCES "
                "to free addresses (unset, the demo picks free ports itself)"
            )
        anywhere = {s: ["127.0.0.1:0"] * len(a) for s, a in settings.instances.items()}
        fleet = Fleet.from_settings(settings, instances=anywhere)
        console.print(
            f"[yellow]fleet port taken[/]: {exc.strerror}; the simulated fleet listens on "
            "free ports instead (DEPLOYER_INSTANCES chooses them)",
            soft_wrap=True,
        )
    stack.enter_context(fleet)
    os.environ["DEPLOYER_INSTANCES"] = json.dumps(fleet.addresses)
    get_settings.cache_clear()
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
    if not port:
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
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help=f"Flower port on 127.0.0.1 (0: no Flower). Default {FLOWER_PORT}, or a free "
            "one when that is taken.",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Give up after S seconds.")] = 120.0,
) -> None:
    """Roll out the canonical demo plan end to end and exit 0 when it is done.

    Flower listens on 5555 and the simulated fleet on 18101-18401 unless those are taken:
    then on free ports, said in one line (--flower-port and DEPLOYER_INSTANCES choose).
    """
    import redis

    from deployer.settings import redact_url

    try:
        _demo(redis_url, keep_running, choose_flower_port(flower_port), timeout)
    except KeyboardInterrupt:
        _stop_here("interrupted; everything it started is stopped", Exit.ENDED_OTHERWISE)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        from deployer.redis_client import tls_refusal

        where = redact_url(redis_url) if redis_url else "the embedded server"
        refused = tls_refusal(exc)
        if refused is not None:
            _stop_here(f"{refused.code}: Redis at {where}: {refused.message}",
                       Exit.ENDED_OTHERWISE)  # fmt: skip
        _stop_here(f"cannot reach Redis at {where}: {exc}", Exit.ENDED_OTHERWISE)


def _demo(redis_url: str | None, keep_running: bool, flower_port: int, timeout: float) -> None:
    from deployer.cli.progress import follow
    from deployer.client import DeployerClient
    from deployer.redis_client import client_for
    from deployer.settings import get_settings, redact_url
    from deployer.state.targets import config_hash, read_config

    workdir = Path(tempfile.mkdtemp(prefix="deployer-demo-"))
    with ExitStack() as stack:
        if redis_url is None:
            from deployer.embedded import EmbeddedRedis

            server = EmbeddedRedis().start()
            stack.callback(server.stop)
            redis_url = server.url
            console.print(f"[bold]embedded server[/] {redis_url} (data in a temporary folder)")
        else:
            client_for(redis_url).ping()  # unreachable: one line, before anything starts
        for name in ("DEPLOYER_BROKER_URL", "DEPLOYER_REDIS_URL", "DEPLOYER_TARGET_REDIS_URL"):
            os.environ[name] = redis_url
        get_settings.cache_clear()

        console.print(f"[bold]simulated fleet[/] {start_fleet(stack)}")
        env = dict(os.environ)  # after the fleet: DEPLOYER_INSTANCES names its addresses

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
        settings = get_settings()
        final = follow(client.store, plan["planId"], timeout)
        tenant_id = plan["tenants"][0]["tenantId"]
        hash_key = config_hash(settings.key_prefix, tenant_id)
        console.print(f"\n[bold]HGETALL {hash_key}[/]")
        written = read_config(client_for(settings.target_url), settings.key_prefix, tenant_id)
        for field, value in sorted((written or {}).items()):
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
