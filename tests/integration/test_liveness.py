"""Worker heartbeats: a dead worker's running tasks are taken over at once, and only those."""

from __future__ import annotations

import pytest
import redis

from deployer import worker_id
from deployer.liveness import Heartbeat
from deployer.planner import Planner
from deployer.redis_client import client_for
from deployer.redrive import OrphanReconciler
from deployer.settings import Settings
from deployer.state.store import Dispatch, Slot, Store
from tests.helpers import bg_tenant, fresh_db, plan, unique, wait_for


@pytest.fixture()
def private_db(redis_url: str) -> str:
    """A database of its own: sweeps must not touch other tests' tasks or workers."""
    return fresh_db(redis_url, 8)


@pytest.fixture()
def r(private_db: str) -> redis.Redis:
    return redis.Redis.from_url(private_db, decode_responses=True)


def _running(url: str, workers: list[str], cap: int = 10) -> tuple[Planner, list[Dispatch]]:
    """One task per worker name, each begun by that worker (chains go to a list, unrun)."""
    settings = Settings(redis_url=url, lease_ttl_seconds=60, max_redeliveries=cap)
    sent: list[Dispatch] = []
    planner = Planner(Store(client_for(settings.state_url), settings), settings, sent.extend)
    plan_id = unique()
    planner.submit(plan(plan_id, [bg_tenant(f"{plan_id}-t{i}") for i in range(len(workers))]))
    begun = list(sent)
    for d, name in zip(begun, workers, strict=True):
        gate = planner.store.begin_stage(d.context, d.run.stages[0], name)
        assert gate.verdict == "OK" and gate.acquired
    return planner, begun


def test_a_dead_workers_running_task_is_redriven_with_a_new_token_and_the_lease_freed(
    r, private_db
):
    planner, (dead_task, live_task) = _running(private_db, ["dead@h", "alive@h"])
    dead = Heartbeat(r, worker_id.node_name("dead@h"), ttl_seconds=0.2)
    alive = Heartbeat(r, worker_id.node_name("alive@h"), ttl_seconds=60)
    assert dead.beat() == alive.beat() == []
    wait_for(lambda: not r.exists(f"deployer:worker:{dead.node}"), what="heartbeat expired")

    assert alive.beat() == [dead.node]
    sent: list[Dispatch] = []

    def launch(slots: list[Slot]) -> list[Dispatch]:
        sent.extend(planner.launch(slots))
        return sent

    orphans = OrphanReconciler(planner.store, launch, lambda plan_id: 0)
    result = orphans.sweep([dead.node])

    assert [s.task_id for s in result.redriven] == [dead_task.task_id]
    task = r.hgetall(f"deployer:task:{dead_task.task_id}")
    assert task["token"] == sent[0].token != dead_task.token
    assert task["redeliveries"] == "1" and task["worker"] == ""
    assert not r.exists(f"deployer:lease:{dead_task.context.tenant_id}")  # free to retake
    assert sent[0].context.stage_index == 0
    # The live worker's task is untouched; the dead node is forgotten on the next pass.
    assert r.hget(f"deployer:task:{live_task.task_id}", "token") == live_task.token
    assert r.get(f"deployer:lease:{live_task.context.tenant_id}") == live_task.token
    assert r.zscore("deployer:workers", dead.node) is not None
    assert not orphans.sweep(alive.beat()).redriven
    assert r.zscore("deployer:workers", dead.node) is None
    assert alive.beat() == []
    # The dead run's late stage is dropped: its token no longer matches.
    late = planner.store.begin_stage(dead_task.context, dead_task.run.stages[0], "dead@h")
    assert late.verdict == "STALE"


def test_past_the_redelivery_cap_a_dead_workers_task_fails_with_its_reason_and_code(r, private_db):
    planner, (task,) = _running(private_db, ["doomed@h"], cap=1)
    key = f"deployer:task:{task.task_id}"
    r.hset(key, "redeliveries", 1)  # it was re-driven once already
    doomed = Heartbeat(r, worker_id.node_name("doomed@h"), ttl_seconds=0.2)
    doomed.beat()
    wait_for(lambda: not r.exists(f"deployer:worker:{doomed.node}"), what="heartbeat expired")
    refilled: list[str] = []
    orphans = OrphanReconciler(planner.store, planner.launch, refilled.append)
    result = orphans.sweep([doomed.node])
    assert result.failed == [(task.task_id, task.context.plan_id)] and not result.redriven
    stored = r.hgetall(key)
    assert stored["status"] == "FAILED" and stored["failureCode"] == "REDELIVERY_LIMIT_REACHED"
    assert "lost; redelivery cap 1 reached" in stored["lastError"]
    assert stored["token"] != task.token  # the dead run is fenced off
    assert not r.exists(f"deployer:lease:{task.context.tenant_id}")
    assert r.zscore("deployer:inflight", task.task_id) is None
    assert refilled == [task.context.plan_id]
    (event,) = [f for _, f in r.xrange("deployer:events") if f["type"] == "TASK_FAILED"]
    assert (event["taskId"], event["by"], event["to"]) == (task.task_id, "reconciler", "FAILED")


def test_a_task_that_moved_on_since_it_was_seen_is_not_taken(r, private_db):
    planner, (task,) = _running(private_db, ["gone@h"])
    gone = Heartbeat(r, worker_id.node_name("gone@h"), ttl_seconds=0.2)
    gone.beat()
    wait_for(lambda: not r.exists(f"deployer:worker:{gone.node}"), what="heartbeat expired")
    orphans = OrphanReconciler(planner.store, planner.launch, lambda plan_id: 0)
    seen = orphans.candidates([gone.node])
    assert [c[0] for c in seen] == [task.task_id]
    # Meanwhile another worker starts the task's next attempt: it is no longer the dead one's.
    planner.store.begin_stage(task.context, task.run.stages[0], "other@h")
    assert not orphans.claim(seen).redriven
    assert r.hget(f"deployer:task:{task.task_id}", "token") == task.token


def test_a_worker_whose_heartbeat_came_back_keeps_its_tasks(r, private_db):
    planner, (task,) = _running(private_db, ["slow@h"])
    slow = Heartbeat(r, worker_id.node_name("slow@h"), ttl_seconds=0.2)
    slow.beat()
    wait_for(lambda: not r.exists(f"deployer:worker:{slow.node}"), what="heartbeat expired")
    orphans = OrphanReconciler(planner.store, planner.launch, lambda plan_id: 0)
    seen = orphans.candidates([slow.node])
    slow.beat()  # it was only late
    assert not orphans.claim(seen).redriven
    assert r.hget(f"deployer:task:{task.task_id}", "token") == task.token


def test_a_watcher_that_missed_its_own_beats_declares_nobody_dead_until_they_could_beat(r):
    """A stalled server (a long script) or watcher lets every heartbeat lapse at once: the
    first beat after it must not re-drive the work of workers that are merely late."""
    watcher = Heartbeat(r, "watcher@h:1", ttl_seconds=0.2)
    other = Heartbeat(r, "other@h:2", ttl_seconds=0.2)
    watcher.beat()
    other.beat()
    wait_for(lambda: not r.exists("deployer:worker:watcher@h:1"), what="both lapsed")
    assert watcher.beat() == []  # it lapsed itself: give the others a beat
    assert watcher.beat() == ["other@h:2"]  # still silent: dead


def test_a_cleanly_stopped_worker_is_not_reported_dead(r):
    watcher = Heartbeat(r, "watcher@h:1", ttl_seconds=60)
    leaving = Heartbeat(r, "leaving@h:2", ttl_seconds=60)
    leaving.beat()
    leaving.stop()
    assert watcher.beat() == []
    assert r.zrange("deployer:workers", 0, -1) == ["watcher@h:1"]


def test_a_recorded_worker_names_its_heartbeat_node():
    label = worker_id.worker_label("w1@host")
    assert worker_id.node_of(label) == worker_id.node_name("w1@host")
    assert worker_id.node_of("w1@host:123") is None  # recorded before heartbeats: lease only


def test_a_stage_message_a_dead_worker_held_is_redriven_even_if_another_worker_ran_the_last_stage(
    r, private_db
):
    """The usual case with several workers: the HealthCheck re-poll published by a live
    worker is held (countdown) by the one that dies. Only the holder's list knows."""
    planner, (waiting, moved_on) = _running(private_db, ["alive@h", "alive@h"])
    alive = Heartbeat(r, worker_id.node_name("alive@h"), ttl_seconds=60)
    holder = Heartbeat(r, worker_id.node_name("holder@h"), ttl_seconds=0.3)
    # The holder has the next poll of `waiting` (attempt 1, not begun) and the message of
    # `moved_on` that it already ran (its cursor is there: the task moved on since).
    held = {
        waiting.task_id: f"{waiting.token}:0:2:1",
        moved_on.task_id: f"{moved_on.token}:0:0:0",
    }
    alive.beat()
    holder.beat(held)
    holder.beat(held)  # held for two beats: published
    assert r.hgetall(f"deployer:worker-holds:{holder.node}") == held
    wait_for(lambda: not r.exists(f"deployer:worker:{holder.node}"), what="holder lapsed")

    dead = alive.beat()
    assert dead == [holder.node]
    orphans = OrphanReconciler(planner.store, planner.launch, lambda plan_id: 0)
    result = orphans.sweep(dead)

    assert [s.task_id for s in result.redriven] == [waiting.task_id]
    assert r.hget(f"deployer:task:{waiting.task_id}", "token") != waiting.token
    assert r.hget(f"deployer:task:{moved_on.task_id}", "token") == moved_on.token
    orphans.sweep(alive.beat())
    assert not r.exists(f"deployer:worker-holds:{holder.node}")  # forgotten with its node


def test_only_messages_held_for_two_beats_are_published_as_changes(r):
    hb = Heartbeat(r, "h@h:1:x", ttl_seconds=60)
    key = "deployer:worker-holds:h@h:1:x"
    hb.beat({"a": "t:0:0:0"})
    assert not r.exists(key)  # a message that comes and goes within a beat costs nothing
    hb.beat({"a": "t:0:0:0", "b": "t:1:0:0"})
    assert r.hgetall(key) == {"a": "t:0:0:0"}
    hb.beat({"b": "t:1:0:0"})
    assert r.hgetall(key) == {"b": "t:1:0:0"}
    hb.stop()
    assert not r.exists(key)
