"""The reconciler's claim: overdue tasks re-driven once each from their checkpoint, capped."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from deployer.models import task_id_for
from deployer.planner import Planner
from deployer.redis_client import client_for
from deployer.redrive import Reconciler
from deployer.settings import Settings
from deployer.state.store import Dispatch, Slot, Store, now_ms
from tests.helpers import bg_tenant, fresh_db, plan, task_rows, unique

LATER = 10 * 60 * 1000  # ten minutes on: every lease has expired


def _no_launch(slots: list[Slot]) -> list[Dispatch]:
    raise AssertionError("these tests only claim")


@pytest.fixture()
def private_db(redis_url: str) -> str:
    """A database of its own: claims in the future must not touch other tests' tasks."""
    return fresh_db(redis_url, 7)


@pytest.fixture()
def r(private_db: str) -> redis.Redis:
    return redis.Redis.from_url(private_db, decode_responses=True)


def _planner(url: str, cap: int = 10) -> tuple[Planner, list[Dispatch]]:
    settings = Settings(redis_url=url, max_redeliveries=cap, lease_ttl_seconds=5)
    sent: list[Dispatch] = []
    # Chains "sent" into a list and never run: as if every worker died right after dispatch.
    return Planner(Store(client_for(settings.state_url), settings), settings, sent.extend), sent


def _submitted(url: str, n: int, cap: int = 10) -> tuple[Store, list[Dispatch], str]:
    planner, sent = _planner(url, cap)
    plan_id = unique()
    planner.submit(plan(plan_id, [bg_tenant(f"{plan_id}-t{i}") for i in range(n)]))
    return planner.store, sent, plan_id


def test_an_overdue_task_is_claimed_once_with_a_new_token_and_its_checkpoint(r, private_db):
    store, sent, _plan_id = _submitted(private_db, 3)
    first = {d.task_id: (d.token, d.run) for d in sent}
    planner = Planner(store, store.settings, sent.extend)
    reconciler = Reconciler(store, planner.launch, lambda plan_id: 0)
    claimed = reconciler.claim(now=now_ms() + LATER)
    assert {s.task_id for s in claimed.redriven} == set(first)
    redriven = planner.launch(claimed.redriven)
    assert sent[-3:] == redriven
    for d in redriven:
        token, run = first[d.task_id]
        assert d.token != token and d.context.token == d.token
        assert d.context.stage_index == 0 and d.run == run  # the run stored at first dispatch
        assert r.hget(f"deployer:task:{d.task_id}", "token") == d.token
        assert r.hget(f"deployer:task:{d.task_id}", "redeliveries") == "1"
    assert not reconciler.claim(now=now_ms()).redriven  # their new deadline is ahead


def test_a_task_whose_dispatcher_died_before_storing_its_run_is_redriven_with_it(r, private_db):
    """Fill and run storage are two round trips: a dispatcher killed in between leaves a
    task holding a slot with only its config. The re-drive builds and stores the run."""
    planner, sent = _planner(private_db)
    plan_id = unique()
    payload = plan(plan_id, [bg_tenant(f"{plan_id}-t0", version=31)])
    assert planner.store.create_plan(*task_rows(payload, planner.settings), 10, "x-")
    slots = planner.store.fill(plan_id)  # ...and the dispatcher dies here
    task_key = f"deployer:task:{slots[0].task_id}"
    assert slots[0].run_json == "" and not r.hexists(task_key, "run")
    reconciler = Reconciler(planner.store, planner.launch, lambda plan_id: 0)
    grace_ms = int(planner.settings.pending_grace_seconds * 1000)
    result = reconciler.sweep(now_ms() + grace_ms + 1000)
    assert [s.task_id for s in result.redriven] == [slots[0].task_id]
    (d,) = sent
    assert d.run.run_id == "x-1" and d.context.plan_version == 31
    assert [s.name for s in d.run.stages] == ["blue-green-gateway"]
    assert d.token == r.hget(task_key, "token") != slots[0].token
    assert json.loads(r.hget(task_key, "run"))["runId"] == "x-1"
    assert json.loads(r.hget(task_key, "ctx"))["additionalData"] == {"planVersion": 31}


def test_a_task_whose_stored_config_no_longer_builds_fails_with_the_reason(r, private_db):
    planner, sent = _planner(private_db)
    plan_id = unique()
    payload = plan(plan_id, [bg_tenant(f"{plan_id}-t0")])
    assert planner.store.create_plan(*task_rows(payload, planner.settings), 10, "y-")
    task_key = f"deployer:task:{task_id_for(plan_id, f'{plan_id}-t0')}"
    r.hset(task_key, "config", '{"tenantId": "not json')
    assert planner.dispatch(plan_id) == 0 and not sent
    task = r.hgetall(task_key)
    assert task["status"] == "FAILED" and "cannot prepare the run" in task["lastError"]
    assert task["failureCode"] == "RUN_UNPREPARABLE"
    assert r.hget(f"deployer:plan:{plan_id}", "status") == "FAILED"
    assert r.hget(f"deployer:plan:{plan_id}", "inflight") == "0"


def test_many_reconcilers_at_once_claim_each_task_exactly_once(private_db):
    store, sent, _plan_id = _submitted(private_db, 10)
    reconcilers = [Reconciler(store, _no_launch, lambda plan_id: 0) for _ in range(8)]
    later = now_ms() + LATER
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda rc: rc.claim(now=later), reconcilers))
    ids = [d.task_id for res in results for d in res.redriven]
    assert len(ids) == 10 and len(set(ids)) == 10


def test_beyond_the_redelivery_cap_the_task_fails_with_the_reason(r, private_db):
    store, sent, plan_id = _submitted(private_db, 1, cap=3)
    task_id = sent[0].task_id
    reconciler = Reconciler(store, _no_launch, lambda plan_id: 0)
    later = now_ms() + LATER
    for i in range(3):
        assert len(reconciler.claim(now=later + i * LATER).redriven) == 1
    final = reconciler.claim(now=later + 3 * LATER)
    assert final.failed == [(task_id, plan_id)] and not final.redriven
    task = r.hgetall(f"deployer:task:{task_id}")
    assert task["status"] == "FAILED" and "redelivery cap 3" in task["lastError"]
    assert task["failureCode"] == "REDELIVERY_LIMIT_REACHED"
    assert r.hget(f"deployer:plan:{plan_id}", "status") == "FAILED"
    assert r.zscore("deployer:inflight", task_id) is None


def test_a_dispatched_task_that_never_started_gets_the_pending_grace(r, private_db):
    """A first stage queued behind thousands is slow, not lost: no duplicate before the grace."""
    store, sent, _plan_id = _submitted(private_db, 2)
    grace_ms = int(store.settings.pending_grace_seconds * 1000)
    ttl_ms = int(store.settings.lease_ttl_seconds * 1000)
    assert grace_ms > ttl_ms
    reconciler = Reconciler(store, _no_launch, lambda plan_id: 0)
    assert not reconciler.claim(now=now_ms() + ttl_ms + 1000).redriven  # lease gone, in grace
    claimed = reconciler.claim(now=now_ms() + grace_ms + 1000)
    assert {d.task_id for d in claimed.redriven} == {d.task_id for d in sent[:2]}


def test_a_never_started_task_waits_twice_as_long_after_each_redrive(r, private_db):
    """Each re-drive adds a message to the queue the task waits in: re-driving a backlogged
    task at a fixed period only lengthens the backlog, so the grace doubles each time."""
    store, sent, _plan_id = _submitted(private_db, 1)
    task_id = sent[0].task_id
    grace_ms = int(store.settings.pending_grace_seconds * 1000)
    reconciler = Reconciler(store, _no_launch, lambda plan_id: 0)
    start = now_ms()
    first = reconciler.claim(now=start + grace_ms + 1000)
    assert [d.task_id for d in first.redriven] == [task_id]
    redriven_at = int(r.hget(f"deployer:task:{task_id}", "dispatchedAt"))
    # one grace after the re-drive: still waiting (twice the grace now)
    assert not reconciler.claim(now=redriven_at + grace_ms + 1000).redriven
    second = reconciler.claim(now=redriven_at + 2 * grace_ms + 1000)
    assert [d.task_id for d in second.redriven] == [task_id]
    again = int(r.hget(f"deployer:task:{task_id}", "dispatchedAt"))
    assert not reconciler.claim(now=again + 3 * grace_ms + 1000).redriven  # four graces now
    assert [d.task_id for d in reconciler.claim(now=again + 4 * grace_ms + 1000).redriven] == [
        task_id
    ]
