"""The push path with real workers, a real fleet and a real Redis.

The background re-poll is set far beyond the test's deadline, so a tenant completes only
because an instance's ack woke its parked HealthCheck; the fleet's poll counts show the
stage was not polled in a loop, the events that it ran once. Polling stays the truth: a
fleet that never acks still completes, a wrong or forged ack wakes nothing and never hurts
the worker. The test owns its server, fleet and worker (nothing else can help or poll).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import redis

from deployer.client import DeployerClient
from deployer.embedded import EmbeddedRedis
from deployer.fleet import Behaviour, Fleet
from deployer.settings import Settings
from deployer.state import keys
from tests.helpers import bg_tenant, plan, unique, wait_for, worker_env

pytestmark = pytest.mark.e2e

TENANTS = 10


def _env(server_url: str, fleet: Fleet, **extra: str) -> dict[str, str]:
    return worker_env(
        DEPLOYER_BROKER_URL=server_url,
        DEPLOYER_REDIS_URL=server_url,
        DEPLOYER_TARGET_REDIS_URL=server_url,
        DEPLOYER_INSTANCES=json.dumps(fleet.addresses),
        DEPLOYER_FLEET_ACKS="true",
        DEPLOYER_LEASE_TTL_SECONDS="600",
        **extra,
    )


#: Patience 200 s in one background poll: only an ack can finish a tenant within the test.
NO_BACKGROUND = {
    "DEPLOYER_VERIFY_INTERVAL_SECONDS": "100",
    "DEPLOYER_VERIFY_MAX_ATTEMPTS": "3",
    "DEPLOYER_ACK_POLLS_PER_MINUTE": "0.1",
}


def _two_stage(tenant: str) -> dict[str, Any]:
    """blue-green-gateway then ob-service: both wait in a HealthCheck; the second stage runs
    only if the parked re-send carried the rest of the chain."""
    return bg_tenant(tenant, serviceNames=["blue-green-gateway", "ob-service"])


def _events(r: Any, plan_id: str) -> Counter[tuple[str, str, str]]:
    entries = r.xrange(keys.events_plan(plan_id))
    return Counter((f.get("type", ""), f.get("taskId", ""), f.get("stage", "")) for _, f in entries)


def test_acks_wake_parked_stages_and_polling_stays_the_truth(spawn_worker):
    with EmbeddedRedis() as server:
        settings = Settings(
            broker_url=server.url, redis_url=server.url, target_redis_url=server.url
        )
        r = redis.Redis.from_url(server.url, decode_responses=True)
        instances = {
            "blue-green-gateway": ["127.0.0.1:0", "127.0.0.1:0"],
            "ob-service": ["127.0.0.1:0"],
        }
        with Fleet(
            instances, server.url, settings.key_prefix, settings.pubsub_topic,
            settings.verify_path, Behaviour(delay=0.5), acks=True,
        ) as fleet:  # fmt: skip
            fleet.behave("never", Behaviour(never=True))
            proc = spawn_worker(
                name="push", concurrency=2, env=_env(server.url, fleet, **NO_BACKGROUND)
            )
            client = DeployerClient(settings)

            # 1. Acks wake: every tenant completes both stages long before any background poll.
            plan_id = unique("push")
            tenants = [f"{plan_id}-t{i}" for i in range(TENANTS)]
            client.submit(plan(plan_id, [_two_stage(t) for t in tenants], maxConcurrency=TENANTS))
            assert client.wait(plan_id, timeout=60) == "COMPLETED"
            stats = fleet.stats()
            assert stats["acks"] >= 3 * TENANTS, stats  # 3 instances acked per tenant
            # per tenant and instance: the poll right after the write, the one an ack woke, and
            # at most one more (an ack that came while the other instance's poll ran)
            assert stats["polls"] <= 3 * 3 * TENANTS, stats
            events = _events(r, plan_id)
            stage_runs = [(t, s) for (kind, t, s), n in events.items() for _ in range(n)
                          if kind == "STAGE_STARTED"]  # fmt: skip
            assert len(stage_runs) == 2 * TENANTS
            assert len(set(stage_runs)) == 2 * TENANTS  # no stage started twice
            assert sum(n for (kind, _, _), n in events.items() if kind == "STAGE_COMPLETED") == (
                2 * TENANTS
            )
            assert r.zcard(keys.PARKED) == 0

            # 2. A wrong-version or forged ack wakes nothing and never hurts the worker.
            stuck_plan = unique("never")
            stuck = f"never-{stuck_plan}"
            client.submit(plan(stuck_plan, [bg_tenant(stuck)]))
            stuck_task = None

            def parked() -> bool:
                nonlocal stuck_task
                stuck_task = r.get(keys.PARK_TENANT.format(tenant_id=stuck))
                return bool(stuck_task) and r.zscore(keys.PARKED, stuck_task) is not None

            wait_for(parked, timeout=30, what="the never-converging tenant parked")
            due = r.zscore(keys.PARKED, stuck_task)
            polls = fleet.stats("never")["polls"]
            bg = fleet.addresses["blue-green-gateway"]
            channel = settings.acks_channel
            forged: list[Any] = [
                "not json", "[]", "{}", "[" * 50_000, json.dumps({"tenantId": 1}),
                json.dumps({"tenantId": stuck, "service": "blue-green-gateway",
                            "instance": bg[0], "version": 19}),  # the old version
                json.dumps({"tenantId": stuck, "service": "ob-service",
                            "instance": bg[0], "version": 20}),  # another service
                json.dumps({"tenantId": stuck, "service": "blue-green-gateway",
                            "instance": "10.9.9.9:1", "version": 20}),  # not its instance
                json.dumps({"tenantId": tenants[0], "service": "blue-green-gateway",
                            "instance": bg[0], "version": 20}),  # a finished task
                "x" * 100_000,
            ]  # fmt: skip
            for message in forged:
                r.publish(channel, message)
            # a marker after them: once it wakes its own parked stage, the forged ones were read
            marker_plan = unique("marker")
            marker = f"never-{marker_plan}"
            client.submit(plan(marker_plan, [bg_tenant(marker)]))
            wait_for(
                lambda: r.get(keys.PARK_TENANT.format(tenant_id=marker)) is not None,
                timeout=30,
                what="marker parked",
            )
            for message in forged:
                r.publish(channel, message)
            fleet.behave(marker, Behaviour(delay=0))  # it converges now, but never acks...
            for address in bg:  # ...so the ack is published by hand
                r.publish(channel, json.dumps({"tenantId": marker, "service":
                          "blue-green-gateway", "instance": address, "version": 20}))  # fmt: skip
            assert client.wait(marker_plan, timeout=30) == "COMPLETED"
            assert proc.poll() is None  # the worker lived through every forged message
            assert r.zscore(keys.PARKED, stuck_task) == due  # nothing woke the stuck tenant
            assert fleet.stats("never")["polls"] - polls <= 2 * 2  # only the marker's polls
            assert r.hget(f"deployer:task:{stuck_task}", "status") == "RUNNING"

            # 3. A pause reaches the parked stage at once (its re-send is made due), not after
            # its 200 s background poll; the parked re-send is gone, nothing polls on.
            task_key = f"deployer:task:{stuck_task}"
            client.pause(plan=stuck_plan)
            wait_for(lambda: r.hget(task_key, "status") == "PAUSED", timeout=20, what="paused")
            assert r.zscore(keys.PARKED, stuck_task) is None
            client.cancel(plan=stuck_plan)
            wait_for(lambda: r.hget(task_key, "status") == "CANCELLED", timeout=20, what="cancel")


def test_a_fleet_that_never_acks_still_completes_by_polling(spawn_worker):
    with EmbeddedRedis() as server:
        settings = Settings(
            broker_url=server.url, redis_url=server.url, target_redis_url=server.url
        )
        r = redis.Redis.from_url(server.url, decode_responses=True)
        instances = {"blue-green-gateway": ["127.0.0.1:0", "127.0.0.1:0"]}
        with Fleet(
            instances, server.url, settings.key_prefix, settings.pubsub_topic,
            settings.verify_path, Behaviour(delay=0.5), acks=False,
        ) as fleet:  # fmt: skip
            env = _env(
                server.url, fleet,
                DEPLOYER_VERIFY_INTERVAL_SECONDS="1",
                DEPLOYER_VERIFY_MAX_ATTEMPTS="31",  # 30 s of patience
                DEPLOYER_ACK_POLLS_PER_MINUTE="60",  # a background poll every second
            )  # fmt: skip
            spawn_worker(name="mute", concurrency=2, env=env)
            client = DeployerClient(settings)
            plan_id = unique("mute")
            tenants = [bg_tenant(f"{plan_id}-t{i}") for i in range(TENANTS)]
            client.submit(plan(plan_id, tenants, maxConcurrency=TENANTS))
            assert client.wait(plan_id, timeout=60) == "COMPLETED"
            assert fleet.stats()["acks"] == 0
            assert r.zcard(keys.PARKED) == 0
