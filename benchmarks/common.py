"""Shared harness: a private Redis, real worker subprocesses, JSON output, statistics.

Every benchmark script runs in its own process (`run_all` spawns them) and calls `setup()`
first: it starts a loopback `redis-server` on a free port (no persistence) and points the
DEPLOYER_* environment at it *before* anything imports celeryconfig.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

from benchmarks import plugins

ROOT = Path(__file__).resolve().parent.parent
QUEUES = "deployer.control,deployer.stages"
_procs: list[subprocess.Popen[bytes]] = []
_tmp = Path(tempfile.mkdtemp(prefix="deployer-bench-"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def emit(figure: str, **values: Any) -> None:
    """One JSON line per figure (the contract of every benchmark script)."""
    print(json.dumps({"figure": figure, **values}, separators=(",", ":")), flush=True)


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def wait_until(cond: Callable[[], Any], timeout: float, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark condition not met within {timeout}s")
        time.sleep(interval)


class Remote:
    """A client view of a Redis server: `r` and its command counters."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.r = redis.Redis.from_url(url, decode_responses=True)

    def commandstats(self) -> dict[str, int]:
        info = self.r.info("commandstats")
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


class Server(Remote):
    """redis-server on loopback, a free port, no persistence; killed at exit."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(_tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _procs.append(self.proc)
        super().__init__(f"redis://127.0.0.1:{self.port}/0")
        wait_until(self._ping, 10, 0.05)

    def _ping(self) -> bool:
        try:
            return bool(self.r.ping())
        except redis.ConnectionError:
            return False


def env_for(server: Remote, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    dist = plugins.install_dist_info(_tmp / "dist")
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{dist}"
    for name in ("DEPLOYER_BROKER_URL", "DEPLOYER_REDIS_URL", "DEPLOYER_TARGET_REDIS_URL"):
        env[name] = server.url
    env.update(extra)
    return env


def setup(**extra: str) -> Server:
    """Start the private server and point this process (and its workers) at it."""
    server = Server()
    env = env_for(server, **extra)
    os.environ.update(env)
    for p in reversed(env["PYTHONPATH"].split(os.pathsep)):
        if p not in sys.path:
            sys.path.insert(0, p)
    return server


class Worker:
    """A real `celery worker` subprocess (prefork unless told), stopped by `stop()`."""

    def __init__(
        self,
        app: str = "benchmarks.apps.deployer",
        concurrency: int = 2,
        queues: str = QUEUES,
        env: dict[str, str] | None = None,
        name: str = "bench",
        pool: str = "prefork",
        cwd: Path = ROOT,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.log = _tmp / f"{name}-{time.monotonic_ns()}.log"
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", app, "worker",
                "-n", f"{name}@%h", "-c", str(concurrency), "-P", pool, "-Q", queues,
                "--without-mingle", "--without-gossip", "-l", "WARNING",
                "--logfile", str(self.log), *extra,
            ],
            cwd=cwd,
            env=env or dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        _procs.append(self.proc)
        self.pool = pool
        wait_until(self._ready, 60, 0.1)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited early; see {self.log}")
        # -l WARNING hides "ready." (INFO would log every task); callers warm up with a
        # small run, which also proves the consumer is up.
        return self.pool == "solo" or len(self.children()) > 0

    def children(self) -> list[int]:
        try:
            out = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in out.split()]

    def rss_mb(self, field: str = "Rss") -> dict[str, float]:
        """`Rss` (or `Pss`: shared pages split between sharers) of the main process and of
        each pool child, in MB."""

        def rss(pid: int) -> float:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
            return 0.0

        out = {"main": rss(self.proc.pid)}
        for i, pid in enumerate(self.children()):
            with contextlib.suppress(OSError):
                out[f"child{i}"] = rss(pid)
        return out

    def stop(self) -> None:
        _stop(self.proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process started here (workers: their whole session, pool children included)."""
    if proc.poll() is None:
        own_group = os.getpgid(proc.pid) == proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM) if own_group else proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL) if own_group else proc.kill()
            proc.wait()


@contextlib.contextmanager
def worker(**kwargs: Any) -> Iterator[Worker]:
    w = Worker(**kwargs)
    try:
        yield w
    finally:
        w.stop()


def _on_term(signum: int, frame: object) -> None:
    # Stop our server and workers first: unwinding through `with` blocks could stall.
    _cleanup()
    os._exit(128 + signum)


signal.signal(signal.SIGTERM, _on_term)


@atexit.register
def _cleanup() -> None:
    for proc in reversed(_procs):
        _stop(proc)
    shutil.rmtree(_tmp, ignore_errors=True)


# ---- plans ---------------------------------------------------------------------------------


def tenant(i: int, services: list[str], version: int = 20, prefix: str = "t") -> dict[str, Any]:
    tid = f"{prefix}{i:06d}"
    cfg: dict[str, Any] = {
        "tenantId": tid,
        "planVersion": version,
        "deployUnitName": "green",
        "networkEndpoints": [
            {"key": "r1", "sourceIp": "10.0.0.1", "targetDomain": "gw.green.example"}
        ],
        "serviceNames": services,
        "sourceTenantDeployConfig": {
            "tenantId": tid,
            "planVersion": version - 1,
            "deployUnitName": "blue",
            "networkEndpoints": [
                {"key": "r1", "sourceIp": "10.0.0.1", "targetDomain": "gw.blue.example"}
            ],
        },
    }
    return cfg


def plan(plan_id: str, n: int, services: list[str], max_concurrency: int) -> dict[str, Any]:
    return {
        "planId": plan_id,
        "maxConcurrency": max_concurrency,
        # tenant ids unique per plan: the fleet remembers what each tenant converged to
        "tenants": [tenant(i, services, prefix=f"{plan_id}-t") for i in range(n)],
    }


def submit(p: dict[str, Any]) -> None:
    from tasks import app

    app.send_task("deployer.submit_plan", args=[p], queue="deployer.control")


def plan_status(server: Remote, plan_id: str) -> str | None:
    return server.r.hget(f"deployer:plan:{plan_id}", "status")


def wait_plan(server: Remote, plan_id: str, timeout: float, interval: float = 0.01) -> float:
    """Block until the plan is COMPLETED; return time.time() at detection."""

    def done() -> bool:
        status = plan_status(server, plan_id)
        if status in ("FAILED", "CANCELLED"):
            raise RuntimeError(f"plan {plan_id} ended {status}")
        return status == "COMPLETED"

    wait_until(done, timeout, interval)
    return time.time()


def task_end_times(server: Remote, plan_id: str) -> list[float]:
    ids = server.r.lrange(f"deployer:plan:{plan_id}:tenants", 0, -1)
    pipe = server.r.pipeline(transaction=False)
    for task_id in ids:
        pipe.hget(f"deployer:task:{task_id}", "endedAt")
    return [int(v) / 1000 for v in pipe.execute() if v]
