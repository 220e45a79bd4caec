"""A Redis Sentinel deployment of real processes for tests: a master, a replica and three
sentinels on free ports (down-after 1 s), killed and restarted like an SRE would."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.helpers import free_port, wait_for

MASTER = "mymaster"


@dataclass
class Node:
    name: str
    dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> Node:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--save", "", "--appendonly", "no", *extra]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.up, timeout=15, what=f"redis {self.name} on {self.port}")
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=2)

    def up(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: no shutdown, unreplicated writes are gone
            self.proc.wait(timeout=10)


@dataclass
class Cluster:
    """A master, a replica and three sentinels on free ports in `root`."""

    root: Path
    master: Node | None = None
    replica: Node | None = None
    sentinels: list[Node] = field(default_factory=list)

    def node(self, name: str) -> Node:
        d = self.root / name
        d.mkdir(exist_ok=True)
        return Node(name, d)

    def start(self) -> Cluster:
        self.master = self.node("a").start()
        self.replica = self.node("b").start("--replicaof", "127.0.0.1", str(self.master.port))
        for i in range(3):
            s = self.node(f"sentinel{i}")
            conf = s.dir / "sentinel.conf"
            conf.write_text(
                f"port {s.port}\nbind 127.0.0.1\ndir {s.dir}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 4000\n"
                f"sentinel parallel-syncs {MASTER} 1\n"
            )
            s.proc = subprocess.Popen(
                ["redis-server", str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_for(s.up, timeout=15, what=f"sentinel {i}")
            self.sentinels.append(s)
        wait_for(self.settled, timeout=60, what="sentinels see the replica and each other")
        return self

    def settled(self) -> bool:
        """Every sentinel knows the master, a replica in sync and the two other sentinels."""
        try:
            for s in self.sentinels:
                c = s.client()
                m = c.sentinel_master(MASTER)
                replicas = c.sentinel_slaves(MASTER)
                if int(m.get("num-other-sentinels", 0)) < 2 or "s_down" in str(m.get("flags")):
                    return False
                if not any(r.get("master-link-status") == "ok" for r in replicas):
                    return False
        except redis.RedisError:
            return False
        return True

    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{s.port}" for s in self.sentinels) + "/0"

    def master_port(self) -> int:
        for s in self.sentinels:
            try:
                return int(s.client().sentinel_get_master_addr_by_name(MASTER)[1])
            except (redis.RedisError, TypeError):
                continue
        raise AssertionError("no sentinel answers")

    def stop(self) -> None:
        for n in [*self.sentinels, self.master, self.replica]:
            if n is not None:
                n.kill()


@contextlib.contextmanager
def running_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A started Cluster, stopped (every process killed) on exit; skips without redis-server."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    c = Cluster(tmp_path / "ha")
    c.root.mkdir()
    try:
        yield c.start()
    finally:
        c.stop()
