"""200 tenants wait on slow instances under one worker of 2 processes.

If a waiting HealthCheck held a process, at most 2 tenants could be "not yet" at any
moment. The fleet counts the tenants it has told "not yet" and that have not converged
since: it sees far more of them at once than there are processes (no wall-clock bound).
The test owns its server, fleet and worker, so no other worker can help.
"""

from __future__ import annotations

import json

import pytest

from deployer.client import DeployerClient
from deployer.embedded import EmbeddedRedis
from deployer.fleet import Behaviour, Fleet
from deployer.settings import Settings
from tests.helpers import bg_tenant, plan, unique, worker_env

pytestmark = pytest.mark.e2e

TENANTS = 200


def test_two_processes_supervise_far_more_waiting_tenants_than_they_are(spawn_worker):
    with EmbeddedRedis() as server:
        settings = Settings(
            broker_url=server.url, redis_url=server.url, target_redis_url=server.url
        )
        instances = {"blue-green-gateway": ["127.0.0.1:0", "127.0.0.1:0"]}
        with Fleet(
            instances, server.url, settings.key_prefix, settings.pubsub_topic,
            settings.verify_path, Behaviour(delay=1.5),
        ) as fleet:  # fmt: skip
            env = worker_env(
                DEPLOYER_BROKER_URL=server.url,
                DEPLOYER_REDIS_URL=server.url,
                DEPLOYER_TARGET_REDIS_URL=server.url,
                DEPLOYER_INSTANCES=json.dumps(fleet.addresses),
                DEPLOYER_VERIFY_INTERVAL_SECONDS="0.5",
                DEPLOYER_VERIFY_MAX_ATTEMPTS="40",
            )
            spawn_worker(name="nb", concurrency=2, env=env)
            plan_id = unique("nb")
            tenants = [bg_tenant(f"{plan_id}-t{i}") for i in range(TENANTS)]
            client = DeployerClient(settings)
            client.submit(plan(plan_id, tenants, maxConcurrency=TENANTS))
            assert client.wait(plan_id, timeout=60) == "COMPLETED"
            stats = fleet.stats()
    assert stats["waiting"] == 0
    assert stats["max_waiting"] >= 50, stats  # 2 processes; a blocking poll would allow 2
