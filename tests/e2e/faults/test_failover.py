"""Redis Sentinel failover mid-rollout: broker, state and target behind Sentinel, the master
killed with SIGKILL at ~60 completed tenants, and nobody acts. The plan completes, every
tenant's hash is at its version on the new master; then the same back the other way.

Everything is a real process: a master, a replica and three sentinels (redis-server and
`redis-server --sentinel`), `celery worker` subprocesses, the simulated fleet. Only the
completion within a generous deadline is asserted; the time from the kill to completion
is printed, never asserted (the machine is shared)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from deployer.client import DeployerClient
from deployer.fleet import Behaviour, Fleet
from deployer.redis_client import connect
from deployer.settings import DEFAULT_INSTANCES, Settings
from tests.e2e.faults.checks import failures, outcome
from tests.helpers import bg_tenant, plan, unique, wait_for
from tests.sentinel import MASTER, Cluster, Node, running_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(600)]


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path) as c:
        yield c


TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
TENANTS, KILL_AT = 300, 60
#: Generous: what is asserted is that the plan completes with nobody acting, not how fast.
DEADLINE = 240


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
