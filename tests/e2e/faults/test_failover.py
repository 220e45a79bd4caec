"""Redis Sentinel failover mid-rollout: broker, state and target behind Sentinel, the master
killed with SIGKILL at ~60 completed tenants, and nobody acts. The plan completes, every
tenant's hash is at its version on the new master; then the same back the other way.

Everything is a real process: a master, a replica and three sentinels (redis-server and
`redis-server --sentinel`), `celery worker` subprocesses, the simulated fleet. Only the
completion within a generous deadline is asserted; the time from the kill to completion
is printed, never asserted (the machine is shared)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from deployer.client import DeployerClient
from deployer.fleet import Behaviour, Fleet
from deployer.redis_client import connect
from deployer.settings import DEFAULT_INSTANCES, Settings
from tests.e2e.faults.checks import failures, outcome
from tests.helpers import bg_tenant, free_port, plan, unique, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(600)]

MASTER = "mymaster"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
TENANTS, KILL_AT = 300, 60
#: Generous: what is asserted is that the plan completes with nobody acting, not how fast.
DEADLINE = 240


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


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    c = Cluster(tmp_path / "ha")
    c.root.mkdir()
    try:
        yield c.start()
    finally:
        c.stop()


def _completed(r: redis.Redis, plan_id: str) -> int:
    try:
        return int(r.hget(f"deployer:plan:{plan_id}", "c:COMPLETED") or 0)
    except redis.RedisError:
        return 0


def _status(r: redis.Redis, plan_id: str) -> str | None:
    try:
        return r.hget(f"deployer:plan:{plan_id}", "status")
    except redis.RedisError:
        return None


def _rollout(cluster: Cluster, settings: Settings, r: redis.Redis, victim: Node) -> float:
    """Submit a plan, SIGKILL `victim` (the master) at KILL_AT completed tenants, and wait
    with no action until the plan is over; returns seconds from the kill to the end."""
    plan_id = unique("ha")
    client = DeployerClient(settings)
    client.submit(
        plan(plan_id, [bg_tenant(f"{plan_id}-t{i}") for i in range(TENANTS)], maxConcurrency=20)
    )
    wait_for(lambda: _completed(r, plan_id) >= KILL_AT, timeout=120, what="60 tenants done")
    killed_at = time.monotonic()
    victim.kill()
    wait_for(lambda: cluster.master_port() != victim.port, timeout=60, what="a new master")
    wait_for(lambda: _status(r, plan_id) in TERMINAL, timeout=DEADLINE, what="plan finished")
    elapsed = time.monotonic() - killed_at
    got = outcome(r, plan_id, version=20)
    assert got.statuses == {"COMPLETED": TENANTS}, failures(r, plan_id)
    assert not got.stuck and not got.wrong_version, (got.stuck[:5], got.wrong_version[:5])
    print(
        f"\nfailover: master :{victim.port} killed at {KILL_AT} done -> new master "
        f":{cluster.master_port()}; plan of {TENANTS} completed {elapsed:.1f}s after the kill "
        f"(redriven={got.redriven}, redeliveries={got.redeliveries})"
    )
    return elapsed


def test_a_plan_survives_two_failovers_with_nobody_acting(cluster: Cluster, supervisor) -> None:
    url = cluster.url()
    for name in ("DEPLOYER_BROKER_URL", "DEPLOYER_REDIS_URL", "DEPLOYER_TARGET_REDIS_URL"):
        supervisor.env[name] = url
    supervisor.env["DEPLOYER_SENTINEL_MASTER"] = MASTER
    settings = Settings(broker_url=url, redis_url=url, target_redis_url=url)
    free = {svc: ["127.0.0.1:0"] * len(addrs) for svc, addrs in DEFAULT_INSTANCES.items()}
    fleet = Fleet(
        free, url, settings.key_prefix, settings.pubsub_topic, settings.verify_path,
        Behaviour(delay=0.2), settings=settings,
    ).start()  # fmt: skip
    supervisor.env["DEPLOYER_INSTANCES"] = json.dumps(fleet.addresses)
    r = connect(url, settings)
    try:
        supervisor.start("w1")
        supervisor.start("w2")
        assert cluster.master is not None and cluster.replica is not None
        first = _rollout(cluster, settings, r, cluster.master)
        # The old master comes back as a replica of the new one, in sync before the next kill.
        old, new = cluster.master, cluster.replica
        old.start("--replicaof", "127.0.0.1", str(new.port))
        wait_for(cluster.settled, timeout=60, what="the old master back as an in-sync replica")
        second = _rollout(cluster, settings, r, new)
        assert cluster.master_port() == old.port
        assert all(p.poll() is None for p in supervisor.procs.values()), "a worker died"
        print(f"failover times: {first:.1f}s, {second:.1f}s (kill to plan completion)")
    finally:
        fleet.stop()
        r.close()
