"""The wave step is one atomic script: many workers advancing or approving a plan at once
start its next wave exactly once, and send each of its tenants once."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import redis

from deployer.control import Controller
from deployer.errors import DeployerError
from deployer.lifecycle import Command
from deployer.planner import Planner
from deployer.redrive import Reconciler
from deployer.settings import get_settings
from deployer.state.store import Dispatch, Store
from tests.helpers import bg_tenant, plan, unique, wait_for


class Sent:
    """Collects what the planner would send (no worker in these tests: the chains are
    counted, not run)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tasks: Counter[str] = Counter()

    def __call__(self, dispatches: list[Dispatch]) -> None:
        with self.lock:
            self.tasks.update(d.task_id for d in dispatches)


@pytest.fixture()
def rig(redis_url):
    sent = Sent()
    store = Store(redis.Redis.from_url(redis_url, decode_responses=True), get_settings())
    planner = Planner(store, get_settings(), sent)
    return planner, Controller(planner), sent


def at_once(n: int, fn) -> list:
    """fn(i) in n threads released together."""
    barrier = threading.Barrier(n)
    out: list = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fn(i)
        except DeployerError as exc:
            out[i] = exc.code

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def wave_started(r, plan_id: str) -> Counter[str]:
    return Counter(f["wave"] for _, f in r.xrange("deployer:events")
                   if f.get("planId") == plan_id and f["type"] == "WAVE_STARTED")  # fmt: skip


def slots_given(r, plan_id: str, tenants: list[str]) -> list[int]:
    """How many times each tenant's task was given a slot (every fill bumps `gen`): whoever
    filled (this test's planner or a worker's reconciler), once means sent once."""
    return [int(r.hget(f"deployer:task:{r.get(f'deployer:tenant:{t}')}", "gen") or 0)
            for t in tenants]  # fmt: skip


def end_canary(control: Controller, tenant: str) -> None:
    """Wave 0 ends without a worker: its one tenant is cancelled."""
    assert control.execute(Command.CANCEL, {"tenantId": tenant})["ok"]


def test_many_approvals_at_once_start_the_wave_once(rig, r):
    planner, control, sent = rig
    tenants = [unique("ma") for _ in range(4)]
    plan_id = unique("many-approve")
    planner.submit(plan(plan_id, [bg_tenant(t) for t in tenants],
                        strategy={"canary": 1, "approval": "first"}))  # fmt: skip
    end_canary(control, tenants[0])
    assert r.hget(f"deployer:plan:{plan_id}", "waveState") == "AWAITING_APPROVAL"

    target = {"planId": plan_id, "wave": 1}
    answers = at_once(8, lambda _: control.execute(Command.APPROVE, target))
    # one approves; the others find it approved already (at-least-once delivery: a repeat
    # is answered, never an error, and never approves anything else)
    assert sorted(a["code"] for a in answers) == ["ALREADY"] * 7 + ["OK"]
    assert wave_started(r, plan_id) == {"0": 1, "1": 1}
    assert slots_given(r, plan_id, tenants[1:]) == [1, 1, 1]
    assert all(n <= 1 for n in sent.tasks.values())


def test_many_reconcilers_at_a_due_bake_start_the_next_wave_once(rig, r):
    planner, control, sent = rig
    tenants = [unique("mb") for _ in range(4)]
    plan_id = unique("many-bake")
    planner.submit(plan(plan_id, [bg_tenant(t) for t in tenants],
                        strategy={"canary": 1, "bakeSeconds": 1}))  # fmt: skip
    end_canary(control, tenants[0])
    key = f"deployer:plan:{plan_id}"
    assert r.hget(key, "waveState") == "BAKING"
    bake_until = int(r.hget(key, "bakeUntil"))
    assert r.zscore("deployer:plan-timers", plan_id) == bake_until
    # before its due time nobody moves it
    Reconciler(planner.store, planner.launch, planner.dispatch, planner.rollout.advance).sweep()
    assert r.hget(key, "waveState") == "BAKING" and wave_started(r, plan_id) == {"0": 1}

    wait_for(lambda: time.time() * 1000 > bake_until + 50, timeout=5, what="bake over")
    advance = planner.rollout.advance
    reconcilers = [Reconciler(planner.store, planner.launch, planner.dispatch, advance)
                   for _ in range(8)]  # fmt: skip
    at_once(8, lambda i: reconcilers[i].advance_due())
    assert wave_started(r, plan_id) == {"0": 1, "1": 1}
    assert r.hget(key, "wave") == "1"
    assert slots_given(r, plan_id, tenants[1:]) == [1, 1, 1]
    assert all(n <= 1 for n in sent.tasks.values())


@pytest.mark.parametrize("slice_size", [3, 100])
def test_waves_are_stored_the_same_whether_the_plan_is_created_whole_or_in_slices(
    redis_url, r, slice_size
):
    from deployer.settings import Settings

    settings = Settings(redis_url=redis_url, plan_create_slice=slice_size)
    store = Store(redis.Redis.from_url(redis_url, decode_responses=True), settings)
    sent = Sent()
    planner = Planner(store, settings, sent)
    tenants = [unique("sl") for _ in range(7)]
    plan_id = unique("slices")
    strategy = {"canary": [tenants[6]], "waves": {"type": "linear", "size": 2}}
    answer = planner.submit(plan(plan_id, [bg_tenant(t) for t in tenants], strategy=strategy))
    assert answer["ok"] and answer["waves"] == 4
    expected = [[tenants[6]], tenants[0:2], tenants[2:4], tenants[4:6]]
    for i, wave in enumerate(expected):
        ids = r.lrange(f"deployer:plan:{plan_id}:wave:{i}", 0, -1)
        assert [r.hget(f"deployer:task:{t}", "tenantId") for t in ids] == wave
        assert all(r.hget(f"deployer:task:{t}", "wave") == str(i) for t in ids)
    assert [t.endswith(tenants[6]) for t in sent.tasks] == [True]  # the canary only
    key = f"deployer:plan:{plan_id}"
    state = (r.hget(key, "waves"), r.hget(key, "wave"), r.hget(key, "waveState"))
    assert state == ("4", "0", "RUNNING")
    started = [f for _, f in r.xrange("deployer:events")
               if f.get("planId") == plan_id and f["type"] == "WAVE_STARTED"]  # fmt: skip
    assert [(f["wave"], f["tenants"]) for f in started] == [("0", "1")]
