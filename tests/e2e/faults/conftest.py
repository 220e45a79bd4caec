"""Fault-injection fixtures: private redis-server processes and a worker supervisor.

Everything here is a real process on loopback: workers are `celery -A tasks worker` started
in their own session, so `kill -9` of the process group takes the main process and its pool
children at once (what an OOM kill or a lost node does); Redis servers are `redis-server`
with `--appendonly yes --appendfsync always` on a free port, restarted on the same port/dir.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.helpers import ROOT, free_port, wait_for, worker_argv, worker_env

#: Fast leases for fault tests: a lost run is re-driven within a few seconds.
FAST_ENV = {
    "DEPLOYER_LEASE_TTL_SECONDS": "2",
    "DEPLOYER_PENDING_GRACE_SECONDS": "4",
    "DEPLOYER_RECONCILE_INTERVAL_SECONDS": "0.5",
    "DEPLOYER_VISIBILITY_TIMEOUT_SECONDS": "10",
}


@dataclass
class RedisServer:
    """A private, durable redis-server that can be killed and restarted in place."""

    dir: Path
    password: str | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=5)

    def start(self) -> RedisServer:
        """Start on `port`. The first start moves to another free port when this one was
        taken between choosing and binding (the server exits); a restart keeps its port."""
        for _ in range(5):
            if self._start() == "up":
                return self
            if self.restarts:
                raise AssertionError(f"redis-server could not listen on {self.port} again")
            self.port = free_port()
        raise AssertionError("redis-server found no free port in 5 attempts")

    def _start(self) -> str:
        args = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.proc = proc
        state = wait_for(
            lambda: "up" if self._ping() else ("exited" if proc.poll() is not None else ""),
            timeout=15,
            what=f"redis-server on {self.port}",
        )
        if state != "up":
            self.proc = None
        return str(state)

    def _ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown save; only what appendfsync-always made durable survives."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.kill()
        self.restarts += 1
        self.start()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


@pytest.fixture()
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    servers: list[RedisServer] = []

    def make(name: str = "r", password: str | None = None) -> RedisServer:
        d = tmp_path / f"redis-{name}"
        d.mkdir()
        server = RedisServer(d, password).start()
        servers.append(server)
        return server

    yield make  # type: ignore[misc]
    for s in servers:
        if s.proc is not None:
            s.proc.send_signal(signal.SIGCONT)
        s.kill()


@dataclass
class Supervisor:
    """Starts named workers, kills them with SIGKILL and restarts them, like systemd would."""

    logdir: Path
    env: dict[str, str]
    concurrency: int = 2
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)
    kills: int = 0

    def log(self, name: str) -> Path:
        return self.logdir / f"{name}.{self.starts.get(name, 0)}.log"

    def start(self, name: str, wait: bool = True) -> subprocess.Popen[bytes]:
        self.starts[name] = self.starts.get(name, 0) + 1
        log = self.log(name)
        proc = subprocess.Popen(
            worker_argv(f"{name}-{self.starts[name]}@%h", self.concurrency, log),
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill -9 takes the pool too
        )
        self.procs[name] = proc
        if wait:
            self.wait_ready(name)
        return proc

    def wait_ready(self, name: str, timeout: float = 45) -> None:
        log = self.log(name)
        wait_for(
            lambda: log.exists() and "ready." in log.read_text(errors="replace"),
            timeout=timeout,
            what=f"worker {name} ready",
        )

    def is_ready(self, name: str) -> bool:
        log = self.log(name)
        return log.exists() and "ready." in log.read_text(errors="replace")

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        self.kills += 1

    def kill_random(self, rng: random.Random) -> str:
        alive = sorted(n for n, p in self.procs.items() if p.poll() is None and self.is_ready(n))
        name = rng.choice(alive)
        self.kill(name)
        return name

    def restart_dead(self) -> None:
        for name, proc in list(self.procs.items()):
            if proc.poll() is not None:
                self.start(name, wait=False)

    def logs_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logdir.glob("*.log")))

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture()
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    sup = Supervisor(tmp_path, worker_env(**FAST_ENV))
    yield sup
    sup.stop()
