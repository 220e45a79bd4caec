"""The reconciler's claim: overdue tasks re-driven once each from their checkpoint, capped."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from deployer.planner import Planner
from deployer.reconciler import Reconciler
from deployer.redis_client import client_for
from deployer.settings import Settings
from deployer.store import Dispatch, Store, now_ms
from tests.helpers import bg_tenant, plan, unique

LATER = 10 * 60 * 1000  # ten minutes on: every lease has expired


@pytest.fixture()
def private_db(redis_url: str) -> str:
    """A database of its own: claims in the future must not touch other tests' tasks."""
    url = redis_url.rsplit("/", 1)[0] + "/7"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture()
def r(private_db: str) -> redis.Redis:
    return redis.Redis.from_url(private_db, decode_responses=True)


def _submitted(url: str, n: int, cap: int = 10) -> tuple[Store, list[Dispatch], str]:
    settings = Settings(redis_url=url, max_redeliveries=cap, lease_ttl_seconds=5)
    store = Store(client_for(settings.state_url), settings)
    sent: list[Dispatch] = []
    plan_id = unique()
    # Chains "sent" into a list and never run: as if every worker died right after dispatch.
    Planner(store, settings, sent.extend).submit(
        plan(plan_id, [bg_tenant(f"{plan_id}-t{i}") for i in range(n)])
    )
    return store, sent, plan_id


def test_an_overdue_task_is_claimed_once_with_a_new_token_and_its_checkpoint(r, private_db):
    store, sent, _plan_id = _submitted(private_db, 3)
    first = {d.task_id: d.token for d in sent}
    reconciler = Reconciler(store, sent.extend, lambda plan_id: 0)
    claimed = reconciler.claim(now=now_ms() + LATER)
    assert {d.task_id for d in claimed.redriven} == set(first)
    for d in claimed.redriven:
        assert d.token != first[d.task_id] and d.context.token == d.token
        assert d.context.stage_index == 0 and d.run.stages
        assert r.hget(f"deployer:task:{d.task_id}", "token") == d.token
        assert r.hget(f"deployer:task:{d.task_id}", "redeliveries") == "1"
    assert not reconciler.claim(now=now_ms()).redriven  # their new deadline is ahead


def test_many_reconcilers_at_once_claim_each_task_exactly_once(private_db):
    store, sent, _plan_id = _submitted(private_db, 10)
    reconcilers = [Reconciler(store, sent.extend, lambda plan_id: 0) for _ in range(8)]
    later = now_ms() + LATER
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda rc: rc.claim(now=later), reconcilers))
    ids = [d.task_id for res in results for d in res.redriven]
    assert len(ids) == 10 and len(set(ids)) == 10


def test_beyond_the_redelivery_cap_the_task_fails_with_the_reason(r, private_db):
    store, sent, plan_id = _submitted(private_db, 1, cap=3)
    task_id = sent[0].task_id
    reconciler = Reconciler(store, sent.extend, lambda plan_id: 0)
    later = now_ms() + LATER
    for i in range(3):
        assert len(reconciler.claim(now=later + i * LATER).redriven) == 1
    final = reconciler.claim(now=later + 3 * LATER)
    assert final.failed == [(task_id, plan_id)] and not final.redriven
    task = r.hgetall(f"deployer:task:{task_id}")
    assert task["status"] == "FAILED" and "redelivery cap 3" in task["lastError"]
    assert r.hget(f"deployer:plan:{plan_id}", "status") == "FAILED"
    assert r.zscore("deployer:inflight", task_id) is None


def test_a_dispatched_task_that_never_started_gets_the_pending_grace(r, private_db):
    """A first stage queued behind thousands is slow, not lost: no duplicate before the grace."""
    store, sent, _plan_id = _submitted(private_db, 2)
    grace_ms = int(store.settings.pending_grace_seconds * 1000)
    ttl_ms = int(store.settings.lease_ttl_seconds * 1000)
    assert grace_ms > ttl_ms
    reconciler = Reconciler(store, sent.extend, lambda plan_id: 0)
    assert not reconciler.claim(now=now_ms() + ttl_ms + 1000).redriven  # lease gone, in grace
    claimed = reconciler.claim(now=now_ms() + grace_ms + 1000)
    assert {d.task_id for d in claimed.redriven} == {d.task_id for d in sent[:2]}
