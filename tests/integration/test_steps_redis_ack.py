"""RedisAck: write + publish once, then verify until every instance reports the version."""

from __future__ import annotations

import json

import pytest

from deployer.errors import StaleRun
from deployer.fleet import Behaviour
from stages.base import Done, Wait
from tests.helpers import unique, wait_for
from tests.stepkit import PREFIX, ctx_for, drive, env_for, once, step_spec


def ack_spec(tenant: str):
    value = {"tenantId": tenant, "sourceUnitName": "blue", "targetUnitName": "green",
             "timestamp": 1764000000000}  # fmt: skip
    return step_spec("redis-ack", field="ob-campaign", value=value, appName="ob-campaign",
                     service="ob-service")  # fmt: skip


def test_redis_ack_writes_publishes_and_verifies_and_writes_only_once(session_fleet, r):
    tenant = unique("ack")
    session_fleet.behave(tenant, Behaviour(after_polls=2))
    env = env_for(session_fleet)
    ctx = ctx_for(env, tenant, 20)
    spec = ack_spec(tenant)
    key = f"{PREFIX}{tenant}"

    wait = once(spec, ctx, env)
    assert isinstance(wait, Wait) and wait.progress["written"] is True
    assert r.hget(key, "metadata") == '{"version":20}'
    assert json.loads(r.hget(key, "ob-campaign"))["targetUnitName"] == "green"
    wait_for(lambda: session_fleet.broadcasts(tenant) == 1, what="ob instance got the broadcast")

    r.hset(key, "ob-campaign", "changed-by-test")  # a later attempt must not write again
    assert drive(spec, ctx, env) == [Done()]
    assert r.hget(key, "ob-campaign") == "changed-by-test"
    assert session_fleet.broadcasts(tenant) == 1


def test_redis_ack_of_a_superseded_run_writes_nothing(session_fleet, r):
    tenant = unique("ackstale")
    env = env_for(session_fleet)
    ctx = ctx_for(env, tenant, 20)
    env.target.set(env.fence_key(tenant), "another-run")
    with pytest.raises(StaleRun):
        once(ack_spec(tenant), ctx, env)
    assert not r.exists(f"{PREFIX}{tenant}")


def test_redis_ack_broadcasts_once_its_write_landed_and_never_for_a_refused_write(session_fleet, r):
    """The write and its broadcast go in one script: a refused write publishes nothing, a
    landed one publishes the contract's message (docs/contracts.md §2) once."""
    tenant = unique("ackpub")
    env = env_for(session_fleet)
    sub = r.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(env.settings.pubsub_topic)
    try:
        wait_for(lambda: r.pubsub_numsub(env.settings.pubsub_topic)[0][1] > 0, what="subscribed")
        stale = ctx_for(env, tenant, 20)
        env.target.set(env.fence_key(tenant), "another-run")
        with pytest.raises(StaleRun):
            once(ack_spec(tenant), stale, env)
        once(ack_spec(tenant), ctx_for(env, tenant, 20), env)  # owns the tenant again

        def ours() -> list[dict[str, object]]:
            got = []
            while (m := sub.get_message(timeout=0.05)) is not None:
                msg = json.loads(m["data"])
                if msg["tenantId"] == tenant:
                    got.append(msg)
            return got

        first = wait_for(ours, what="the landed write's broadcast")
        assert [{k: v for k, v in m.items() if k != "timestamp"} for m in first] == [
            {"tenantId": tenant, "appName": "ob-campaign", "version": 20}
        ]
        assert isinstance(first[0]["timestamp"], int)
    finally:
        sub.close()
