"""Redis (broker + state + target) restarted mid-plan, and RabbitMQ as the broker."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from deployer.client import DeployerClient
from deployer.fleet import Behaviour, Fleet
from deployer.settings import DEFAULT_INSTANCES, Settings
from tests.e2e.faults.checks import failures, outcome
from tests.helpers import bg_tenant, plan, unique, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(240)]

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def _fleet_on(url: str) -> Fleet:
    s = Settings()
    free = {svc: ["127.0.0.1:0"] * len(addrs) for svc, addrs in DEFAULT_INSTANCES.items()}
    # Instances re-read the hash on every poll: a restart may drop their pub/sub subscription.
    behaviour = Behaviour(lose_broadcast=True)
    return Fleet(free, url, s.key_prefix, s.pubsub_topic, s.verify_path, behaviour).start()


@pytest.fixture()
def private_stack(redis_server, supervisor) -> Iterator[tuple[object, Fleet]]:
    server = redis_server("state")
    fleet = _fleet_on(server.url)
    for name in ("DEPLOYER_BROKER_URL", "DEPLOYER_REDIS_URL", "DEPLOYER_TARGET_REDIS_URL"):
        supervisor.env[name] = server.url
    supervisor.env["DEPLOYER_INSTANCES"] = json.dumps(fleet.addresses)
    try:
        yield server, fleet
    finally:
        fleet.stop()


def _completed(r, plan_id: str) -> int:
    try:
        return int(r.hget(f"deployer:plan:{plan_id}", "c:COMPLETED") or 0)
    except Exception:  # the server is restarting
        return 0


def test_plan_completes_across_two_restarts_of_its_redis(private_stack, supervisor):
    server, _fleet = private_stack
    supervisor.start("w1")
    supervisor.start("w2")
    plan_id, n = unique(), 200
    client = DeployerClient(Settings(broker_url=server.url, redis_url=server.url))
    client.submit(
        plan(plan_id, [bg_tenant(f"{plan_id}-t{i}") for i in range(n)], maxConcurrency=20)
    )
    r = server.client()
    for threshold in (40, 120):
        wait_for(lambda t=threshold: _completed(r, plan_id) >= t, timeout=60, what="progress")
        server.restart()  # SIGKILL, then the same port and AOF directory
    r = server.client()
    wait_for(
        lambda: r.hget(f"deployer:plan:{plan_id}", "status") in TERMINAL,
        timeout=100,
        what="plan finished after Redis restarts",
    )
    got = outcome(r, plan_id, version=20)
    assert got.statuses == {"COMPLETED": n}, failures(r, plan_id)
    assert not got.stuck and not got.wrong_version and not got.completed_twice
    assert all(p.poll() is None for p in supervisor.procs.values()), "a worker died"
    print(f"\nredis restarts survived={server.restarts} tenants={n} redriven={got.redriven} lost=0")


def test_rabbitmq_broker_with_redis_state_survives_a_worker_kill(supervisor, r, rabbit):
    # a vhost of the session's own (tests/rabbit.py): nobody else's queues are touched
    rabbit_url = rabbit.url
    supervisor.env["DEPLOYER_BROKER_URL"] = rabbit_url
    supervisor.start("w1")
    supervisor.start("w2")
    plan_id, n = unique(), 100
    client = DeployerClient(Settings(broker_url=rabbit_url))
    client.submit(
        plan(plan_id, [bg_tenant(f"{plan_id}-t{i}") for i in range(n)], maxConcurrency=10)
    )
    wait_for(lambda: _completed(r, plan_id) >= 30, timeout=60, what="progress")
    supervisor.kill("w1")  # RabbitMQ requeues its unacked messages at once
    supervisor.start("w1")
    wait_for(
        lambda: r.hget(f"deployer:plan:{plan_id}", "status") in TERMINAL,
        timeout=90,
        what="plan COMPLETED over RabbitMQ",
    )
    got = outcome(r, plan_id, version=20)
    assert got.statuses == {"COMPLETED": n}
    assert not got.stuck and not got.wrong_version and not got.completed_twice
    log = supervisor.logs_text()
    assert "guest:guest" not in log  # the broker password is never printed
    print(f"\nrabbitmq: kills=1 tenants={n} redriven={got.redriven} lost=0")
