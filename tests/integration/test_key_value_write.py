"""KeyValueWrite: data + metadata in one atomic round trip, fenced by the lease.

The hash contract is docs/contracts.md §2.
"""

from __future__ import annotations

import logging

import pytest
import redis

from deployer.context import TaskRuntimeContext
from deployer.errors import StaleRun
from deployer.models import StepSpec, task_id_for
from deployer.settings import get_settings
from deployer.state import keys
from stages.base import StepEnv
from stages.steps.key_value_write import KeyValueWrite
from tests.helpers import unique

VALUE = {"tenantId": "x", "sourceUnitName": "blue", "targetUnitName": "green", "routes": []}


@pytest.fixture()
def env(r: redis.Redis) -> StepEnv:
    return StepEnv(settings=get_settings(), target=r)


def ctx_for(tenant: str, version: object = 20, token: str = "run.1") -> TaskRuntimeContext:
    data = {} if version is Ellipsis else {"planVersion": version}
    return TaskRuntimeContext(
        plan_id="p",
        task_id=task_id_for("p", tenant),
        tenant_id=tenant,
        run_id="run",
        token=token,
        additional_data=data,
    )


def step(field: str = "icc-bg-gateway", **params: object) -> StepSpec:
    return StepSpec(
        type="key-value-write", name="w", params={"field": field, "value": VALUE, **params}
    )


def hold_lease(r: redis.Redis, tenant: str, token: str = "run.1") -> None:
    r.set(keys.lease(tenant), token, px=60_000)


def commandstats(r: redis.Redis) -> dict[str, int]:
    return {k: v["calls"] for k, v in r.info("commandstats").items()}


def test_writes_data_and_metadata_exactly(r, env):
    tenant = unique("t")
    hold_lease(r, tenant)
    KeyValueWrite().run(step(), ctx_for(tenant, 123), env)
    assert r.hgetall(f"icc_ai_ops_srv:tenant_config:{tenant}") == {
        "icc-bg-gateway": '{"tenantId":"x","sourceUnitName":"blue","targetUnitName":"green",'
        '"routes":[]}',
        "metadata": '{"version":123}',
    }


def test_the_write_is_one_round_trip_of_one_script():
    """Counted on a private server so no other test's traffic can blur the figure."""
    from deployer.embedded import EmbeddedRedis

    with EmbeddedRedis() as server:
        private = redis.Redis.from_url(server.url, decode_responses=True)
        env = StepEnv(settings=get_settings(), target=private)
        tenant = unique("t")
        hold_lease(private, tenant)
        KeyValueWrite().run(step(), ctx_for(tenant), env)  # loads the script once
        before = commandstats(private)
        KeyValueWrite().run(step(), ctx_for(tenant, 21), env)
        after = commandstats(private)
        delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        # One EVALSHA from the client; the GET (fence) and HSET inside it run atomically.
        assert delta.pop("cmdstat_evalsha") == 1
        assert delta.pop("cmdstat_hset") == 1 and delta.pop("cmdstat_get") == 1
        assert set(delta) <= {"cmdstat_info"}, delta
        assert private.hget(f"icc_ai_ops_srv:tenant_config:{tenant}", "metadata") == (
            '{"version":21}'
        )
        private.close()


@pytest.mark.parametrize("version", [None, Ellipsis], ids=["planVersion-null", "not-in-context"])
def test_missing_version_warns_writes_data_and_drops_stale_metadata(r, env, caplog, version):
    tenant = unique("t")
    hold_lease(r, tenant)
    r.hset(f"icc_ai_ops_srv:tenant_config:{tenant}", "metadata", '{"version":7}')
    with caplog.at_level(logging.WARNING, logger="deployer.steps"):
        KeyValueWrite().run(step(), ctx_for(tenant, version), env)
    data = r.hgetall(f"icc_ai_ops_srv:tenant_config:{tenant}")
    assert set(data) == {"icc-bg-gateway"}
    warnings = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
    assert any(tenant in rec.getMessage() and "planVersion" in rec.getMessage() for rec in warnings)


def test_a_stale_run_cannot_write(r, env):
    tenant = unique("t")
    hold_lease(r, tenant, token="newer.2")
    with pytest.raises(StaleRun):
        KeyValueWrite().run(step(), ctx_for(tenant, token="older.1"), env)
    assert not r.exists(f"icc_ai_ops_srv:tenant_config:{tenant}")


def test_rollback_write_deletes_fields_the_old_config_does_not_produce(r, env):
    tenant = unique("t")
    hold_lease(r, tenant)
    r.hset(f"icc_ai_ops_srv:tenant_config:{tenant}", "ob-campaign", "{}")
    KeyValueWrite().run(step(deleteFields=["ob-campaign"]), ctx_for(tenant, 19), env)
    assert set(r.hgetall(f"icc_ai_ops_srv:tenant_config:{tenant}")) == {
        "icc-bg-gateway",
        "metadata",
    }
