"""Test helpers: waiting on conditions with deadlines (never bare sleeps), loopback ports
without the bind race, keys planted by hand and removed with the test, the worker subprocess
command line, sample plans."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis

T = TypeVar("T")

#: The repository: the working directory and PYTHONPATH of subprocesses.
ROOT = Path(__file__).resolve().parent.parent


def wait_for(
    condition: Callable[[], T], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `condition` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T = condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)
        last = condition()
    return last


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A socket bound to a free port and listening, for a server that accepts one (uvicorn's
    `sockets=`): the port is never released between choosing it and serving on it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(128)
    return sock


class Planted:
    """Keys a test sets by hand to force a situation: another run holding a tenant's lease, a
    config key of the wrong Redis type (every write to it fails WRONGTYPE). The `planted`
    fixture deletes them after the test, pass or fail, so a failing test leaves no lease or
    broken key behind; deleting one mid-test (releasing the tenant, fixing the key) is a
    step of the test, not its clean-up."""

    def __init__(self, r: Any) -> None:
        self.r = r
        self.keys: list[str] = []

    def lease(self, tenant: str, holder: str = "another-run", ttl_ms: int = 60_000) -> str:
        """`holder` takes the tenant's lease: runs of the tenant wait for it."""
        key = f"deployer:lease:{tenant}"
        self.r.set(key, holder, px=ttl_ms)
        self.keys.append(key)
        return key

    def not_a_hash(self, key: str) -> str:
        """`key` (a tenant's config hash) holds a string: writing the config fails."""
        self.r.set(key, "not a hash")
        self.keys.append(key)
        return key

    def remove(self) -> None:
        if self.keys:
            self.r.delete(*self.keys)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free at the moment of asking. Another process may take it before the server
    binds it: start servers with `start_on_free_port` (or `listening_socket`) instead."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start_on_free_port(
    start: Callable[[int], subprocess.Popen[bytes]],
    up: Callable[[int], bool],
    attempts: int = 5,
    timeout: float = 30.0,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a server process on a free port, choosing another one when it exits before it
    answers `up` (the port was taken between choosing and binding: EADDRINUSE)."""
    proc, ports = start_on_free_ports(
        1, lambda ports: start(ports[0]), lambda ports: up(ports[0]), attempts, timeout
    )
    return proc, ports[0]


def start_on_free_ports(
    count: int,
    start: Callable[[list[int]], subprocess.Popen[Any]],
    up: Callable[[list[int]], bool],
    attempts: int = 5,
    timeout: float = 30.0,
) -> tuple[subprocess.Popen[Any], list[int]]:
    """`start_on_free_port` for a process serving `count` ports (e.g. a simulated fleet)."""
    for _ in range(attempts):
        ports: list[int] = []
        while len(ports) < count:  # distinct: a port freed a moment ago may come back
            port = free_port()
            ports += [] if port in ports else [port]
        proc = start(ports)

        def state(ports: list[int] = ports, proc: subprocess.Popen[Any] = proc) -> str:
            return "up" if up(ports) else ("exited" if proc.poll() is not None else "")

        alive_or_up = wait_for(state, timeout=timeout, interval=0.1, what=f"a server on {ports}")
        if alive_or_up == "up":
            return proc, ports
        proc.communicate()  # exited: reaped, its pipes (if any) closed
    raise AssertionError(f"no server started in {attempts} attempts (ports kept being taken)")


#: Basic-auth credentials of the Flowers tests start.
FLOWER_AUTH = ("ops", "s3cret-pass")


def http_up(url: str, auth: Any = None) -> bool:
    """`url` answers (anything below 500)."""
    import httpx

    try:
        return httpx.get(url, auth=auth, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


def serve_flower(start: Callable[..., subprocess.Popen[bytes]], env: dict[str, str]) -> str:
    """A Flower listening on a free port (`start`: the `start_flower` fixture); its URL."""

    def on(port: int) -> subprocess.Popen[bytes]:
        return start(f"--port={port}", env=env)

    _proc, port = start_on_free_port(on, lambda p: http_up(f"http://127.0.0.1:{p}/healthcheck"))
    return f"http://127.0.0.1:{port}"


def unique(prefix: str = "plan") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def bg_tenant(
    tenant_id: str, version: int | None = 20, prev_version: int | None = 19, **extra: Any
) -> dict[str, Any]:
    """A TenantConfig (Java wire shape) that needs only the blue-green-gateway stage."""
    cfg: dict[str, Any] = {
        "tenantId": tenant_id,
        "deployUnitName": "green",
        "networkEndpoints": [
            {"key": "r1", "sourceIp": "10.0.0.1", "targetDomain": "gw.green.example"}
        ],
        "serviceNames": ["blue-green-gateway"],
    }
    if version is not None:
        cfg["planVersion"] = version
    if prev_version is not None:
        cfg["sourceTenantDeployConfig"] = {
            "tenantId": tenant_id,
            "planVersion": prev_version,
            "deployUnitName": "blue",
            "networkEndpoints": [
                {"key": "r1", "sourceIp": "10.0.0.1", "targetDomain": "gw.blue.example"}
            ],
        }
    cfg.update(extra)
    return cfg


def plan(plan_id: str, tenants: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"planId": plan_id, "tenants": tenants, **extra}


def task_rows(payload: dict[str, Any], settings: Any) -> tuple[str, list[Any]]:
    """(plan id, the rows the store keeps per task) of a valid plan: what submit writes."""
    from deployer.intake import task_row, validate_plan

    head, rows = validate_plan(payload, settings, lambda config: task_row(config, settings))
    return head.plan_id, rows


def worker_argv(node: str, concurrency: int, log: Path, pool: str = "prefork") -> list[str]:
    """The real worker command line, as deploy/ runs it, for subprocess tests."""
    queues = "deployer.control,deployer.stages"
    return [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-n", node,
            "-c", str(concurrency), "-P", pool, "-Q", queues, "--without-mingle",
            "--without-gossip", "-l", "INFO", "--logfile", str(log)]  # fmt: skip


def worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def run_cli(*args: str) -> Any:
    """`deployer ARGS` in this process (typer's runner): exit code and output, no shell."""
    from typer.testing import CliRunner

    from deployer.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def fresh_db(redis_url: str, index: int) -> str:
    """The URL of database `index` on the tests' Redis, emptied: for a test module whose
    sweeps or claims would touch other tests' tasks in the shared database."""
    url = redis_url.rsplit("/", 1)[0] + f"/{index}"
    redis.Redis.from_url(url).flushdb()
    return url
