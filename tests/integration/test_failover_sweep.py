"""After the state Redis changed servers (a failover, a restart from an older snapshot), the
first worker to notice re-drives every live task from the checkpoint the new server holds,
under a token no lost write could have handed out; the others, and later beats, do nothing."""

from __future__ import annotations

import pytest
import redis

from deployer.failover import FailoverWatch
from deployer.planner import Planner
from deployer.redis_client import client_for
from deployer.redrive import GEN_STEP, FailoverRedrive
from deployer.settings import Settings
from deployer.state.keys import REDIS_RUN_ID as RUN_ID_KEY
from deployer.state.store import Dispatch, Slot, Store
from tests.helpers import bg_tenant, fresh_db, plan, unique


@pytest.fixture()
def private_db(redis_url: str) -> str:
    """A database of its own: the sweep re-drives every task it watches."""
    return fresh_db(redis_url, 9)


def _planner(url: str) -> tuple[Planner, list[Dispatch]]:
    settings = Settings(redis_url=url, lease_ttl_seconds=60)
    sent: list[Dispatch] = []
    planner = Planner(Store(client_for(settings.state_url), settings), settings, sent.extend)
    return planner, sent


def test_a_new_server_redrives_every_live_task_once(private_db: str) -> None:
    planner, sent = _planner(private_db)
    r = planner.store.r
    plan_id = unique()
    planner.submit(plan(plan_id, [bg_tenant(f"{plan_id}-t{i}") for i in range(3)]))
    running, pending, _ = list(sent)
    gate = planner.store.begin_stage(running.context, running.run.stages[0], "w@h")
    assert gate.verdict == "OK" and gate.acquired
    relaunched: list[Dispatch] = []

    def launch(slots: list[Slot]) -> list[Dispatch]:
        out = planner.launch(slots)
        relaunched.extend(out)
        return out

    first = FailoverWatch(FailoverRedrive(planner.store, launch))
    second = FailoverWatch(FailoverRedrive(planner.store, launch))
    assert first.check() is None  # the first look only records the server
    assert second.check() is None  # same server: nothing
    assert r.get(RUN_ID_KEY) == first.server_id()

    r.set(RUN_ID_KEY, "an-older-server")  # what a promoted replica's state says
    result = first.check()
    assert result is not None and len(result.redriven) == 3
    assert second.check() is None  # exactly one worker acts on a failover
    assert first.check() is None

    by_id = {d.task_id: d for d in relaunched}
    for old in (running, pending):
        task = r.hgetall(f"deployer:task:{old.task_id}")
        new = by_id[old.task_id]
        assert task["token"] == new.token != old.token
        assert int(task["gen"]) >= GEN_STEP  # past any token a lost write handed out
        assert task.get("redeliveries", "0") == "0"  # a failover is no redelivery
        assert new.context.stage_index == 0  # from the stored checkpoint
    assert not r.exists(f"deployer:lease:{running.context.tenant_id}")  # free to retake
    late = planner.store.begin_stage(running.context, running.run.stages[0], "w@h")
    assert late.verdict == "STALE"  # what ran on the old master is fenced off
    reasons = {
        f.get("reason")
        for _id, f in r.xrange("deployer:events")
        if f.get("type") == "TASK_REDRIVEN" and f.get("planId") == plan_id
    }
    assert reasons == {"redis failover"}


def test_finished_tasks_are_left_alone(private_db: str) -> None:
    planner, sent = _planner(private_db)
    r = planner.store.r
    plan_id = unique()
    planner.submit(plan(plan_id, [bg_tenant(f"{plan_id}-t0")]))
    (task,) = sent
    r.hset(f"deployer:task:{task.task_id}", "status", "COMPLETED")
    watch = FailoverWatch(FailoverRedrive(planner.store, planner.launch))
    watch.check()
    r.set(RUN_ID_KEY, "an-older-server")
    result = watch.check()
    assert result is not None and result.redriven == []
    assert r.hget(f"deployer:task:{task.task_id}", "token") == task.token


def test_a_failover_check_that_fails_never_costs_a_heartbeat(private_db: str) -> None:
    """An ACL user without INFO: detection turns off with one line; the worker beats on."""
    from deployer import worker_id
    from deployer.liveness import Heartbeat, Liveness
    from deployer.maintenance import Duty, MaintenanceLoop
    from deployer.redrive import OrphanReconciler
    from tests.helpers import wait_for

    planner, _ = _planner(private_db)

    class NoInfo(FailoverWatch):
        def server_id(self) -> str:
            raise redis.exceptions.NoPermissionError("NOPERM this user has no permissions")

    node = worker_id.node_name("acl@h")
    heartbeat = Heartbeat(planner.store.r, node, ttl_seconds=5)
    orphans = OrphanReconciler(planner.store, planner.launch, lambda plan_id: 0)
    failover = NoInfo(FailoverRedrive(planner.store, planner.launch))
    liveness = Liveness(heartbeat, orphans, 5, failover=failover)
    loop = MaintenanceLoop([Duty("liveness", liveness.tick, liveness.interval, runs_long=True)])
    loop.start()
    try:
        wait_for(lambda: planner.store.r.exists(f"deployer:worker:{node}"), what="a beat")
        assert liveness.failover is None
        assert loop.failures["liveness"] == 0
    finally:
        loop.stop()
