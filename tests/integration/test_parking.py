"""The Redis side of the push path (deployer/parking.py) against a real Redis: one parked
re-send per task, woken only by a matching ack, popped once, never for a lost run."""

from __future__ import annotations

import json

import pytest

from deployer.parking import Ack, Parking, Resend, WakeOn, ack_countdown, parse_ack
from deployer.settings import Settings
from deployer.state import keys
from tests.helpers import unique

INSTANCES = ["127.0.0.1:7001", "127.0.0.1:7002"]


@pytest.fixture()
def parking(r):
    return Parking(r)


def _task(r, token: str = "tok-1") -> tuple[str, str]:
    task_id, tenant = unique("task"), unique("tenant")
    r.hset(keys.task(task_id), mapping={"token": token, "tenantId": tenant})
    return task_id, tenant


def _park(parking, task_id, tenant, token="tok-1", countdown=60.0, version=20, sig="{}"):
    resend = Resend(
        task_id=task_id, tenant_id=tenant, token=token, position=f"{token}:0:1:1",
        wake=WakeOn("blue-green-gateway", version, INSTANCES), sig=sig,
    )  # fmt: skip
    return parking.park(resend, countdown)


def _ack(tenant, instance=INSTANCES[0], version=20, service="blue-green-gateway"):
    return Ack(tenantId=tenant, service=service, instance=instance, version=version)


def _mine(tick, task_id):
    return [sig for t, sig in tick.sends if t == task_id]


def test_a_matching_ack_wakes_the_parked_resend_once(r, parking):
    task_id, tenant = _task(r)
    assert _park(parking, task_id, tenant, sig='{"me": 1}') == "OK"
    assert _mine(parking.tick("n1", [], []), task_id) == []  # not due for 60 s
    tick = parking.tick("n1", [], [_ack(tenant)])
    assert _mine(tick, task_id) == ['{"me": 1}']
    assert r.hget(keys.worker_sends("n1"), task_id) == "tok-1:0:1:1"
    # popped: a second ack, or another worker's tick, sends nothing more
    assert _mine(parking.tick("n2", [], [_ack(tenant, INSTANCES[1])]), task_id) == []
    parking.tick("n1", [task_id], [])
    assert not r.hexists(keys.worker_sends("n1"), task_id)


def test_wrong_version_service_or_instance_wakes_nothing(r, parking):
    task_id, tenant = _task(r)
    _park(parking, task_id, tenant)
    due = r.zscore(keys.PARKED, task_id)
    wrong = [
        _ack(tenant, version=19),
        _ack(tenant, version="twenty"),
        _ack(tenant, service="ob-service"),
        _ack(tenant, instance="127.0.0.1:9999"),
        _ack(unique("other-tenant")),
    ]
    assert _mine(parking.tick("n1", [], wrong), task_id) == []
    assert r.zscore(keys.PARKED, task_id) == due


def test_an_ack_for_a_tenant_with_nothing_parked_leaves_nothing_behind(r, parking):
    tenant = unique("idle")
    parking.tick("n1", [], [_ack(tenant)])
    assert not r.exists(keys.PARK_ACKS.format(tenant_id=tenant))


def test_an_ack_while_the_poll_runs_makes_the_next_park_resend_at_once(r, parking):
    task_id, tenant = _task(r)
    _park(parking, task_id, tenant)
    assert _mine(parking.tick("n1", [], [_ack(tenant)]), task_id)  # popped: its poll runs
    parking.tick("n1", [task_id], [_ack(tenant, INSTANCES[1])])  # the other acks meanwhile
    assert _park(parking, task_id, tenant) == "NOW"
    assert r.zscore(keys.PARKED, task_id) is None
    assert _park(parking, task_id, tenant) == "OK"  # the ack was used up: no loop


def test_parking_again_replaces_and_a_lost_run_never_parks_or_sends(r, parking):
    task_id, tenant = _task(r)
    _park(parking, task_id, tenant, sig='{"v": 1}')
    _park(parking, task_id, tenant, sig='{"v": 2}', countdown=0)
    assert r.zcount(keys.PARKED, "-inf", "+inf") >= 1
    assert _mine(parking.tick("n1", [], []), task_id) == ['{"v": 2}']
    assert _park(parking, task_id, tenant, token="old-token") == "STALE"
    _park(parking, task_id, tenant, countdown=0)
    r.hset(keys.task(task_id), "token", "re-driven")  # the task moved on to a new run
    assert _mine(parking.tick("n1", [], []), task_id) == []
    assert r.zscore(keys.PARKED, task_id) is None


def test_no_plan_version_any_version_wakes(r, parking):
    task_id, tenant = _task(r)
    _park(parking, task_id, tenant, version=None)
    assert _mine(parking.tick("n1", [], [_ack(tenant, version=7)]), task_id)


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        "[]",
        "null",
        json.dumps({"tenantId": 5, "service": "s", "instance": "i"}),
        json.dumps({"tenantId": "t", "service": "s", "instance": "i", "version": True}),
        json.dumps({"tenantId": "t", "service": "s", "instance": "i", "version": [1]}),
        json.dumps({"tenantId": "t" * 10_000, "service": "s", "instance": "i"}),
        "[" * 100_000,
        b"\xff\xfe",
        None,
    ],
)
def test_malformed_acks_are_dropped(data):
    assert parse_ack(data) is None


def test_a_wellformed_ack_parses():
    ack = parse_ack(json.dumps({"tenantId": "t", "service": "s", "instance": "i", "version": 20}))
    assert ack is not None and ack.args() == ["t", "s", "i", "20"]


def test_background_polls_stay_within_the_rate_and_the_patience():
    s = Settings(ack_polls_per_minute=5, lease_ttl_seconds=60)
    assert ack_countdown(s, 27.0, 0.0) == pytest.approx(13.5)
    assert ack_countdown(s, 27.0, 20.0) == pytest.approx(7.0)  # never past the patience
    assert ack_countdown(s, 90.0, 0.0) == pytest.approx(90 / 7)  # 7 polls in 90 s
    assert ack_countdown(s, 10.0, 0.0) == pytest.approx(10.0)
    for patience in (10.0, 27.0, 60.0, 90.0, 600.0):
        polls = patience / ack_countdown(s, patience, 0.0)
        assert polls <= max(1.0, 5 * patience / 60) + 1e-9
