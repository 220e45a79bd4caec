"""kill -9 of a worker's main process mid-stage: its heartbeat vanishes and the tenant runs
again on the surviving worker within seconds, not after the 60 s lease, and only once."""

from __future__ import annotations

import os
import signal

import pytest

from deployer.client import DeployerClient
from deployer.fleet import Behaviour
from deployer.models import task_id_for
from tests.e2e.faults.checks import outcome, plan_events
from tests.helpers import bg_tenant, plan, unique, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

#: Production lease; the next HealthCheck poll comes only after 30 s (visibility above it):
#: only the heartbeat can bring the tenant back before either.
SLOW_FALLBACKS = {
    "DEPLOYER_LEASE_TTL_SECONDS": "60",
    "DEPLOYER_VERIFY_FIRST_INTERVAL_SECONDS": "30",
    "DEPLOYER_VERIFY_INTERVAL_SECONDS": "30",
    "DEPLOYER_VISIBILITY_TIMEOUT_SECONDS": "60",
    "DEPLOYER_WORKER_HEARTBEAT_SECONDS": "2",
}


def test_main_process_killed_mid_stage_runs_the_tenant_again_within_seconds_once(
    supervisor, r, session_fleet
):
    tenant, plan_id = unique("hbkill"), unique()
    task_id = task_id_for(plan_id, tenant)
    task_key = f"deployer:task:{task_id}"
    # A slow instance: the first poll hears the old version, the stage waits mid-stage.
    session_fleet.behave(tenant, Behaviour(delay=1.0))
    supervisor.env.update(SLOW_FALLBACKS)
    supervisor.start("w1")
    supervisor.start("w2")
    DeployerClient().submit(plan(plan_id, [bg_tenant(tenant)]))
    wait_for(lambda: session_fleet.stats(tenant)["polls"] >= 1, what="first poll answered")

    worker = r.hget(task_key, "worker")
    name = worker.split("@", 1)[0].rsplit("-", 1)[0]
    victim = supervisor.procs[name]
    node = worker.rpartition("/")[0]
    assert f":{victim.pid}:" in node, worker  # the stage names its main process
    assert r.exists(f"deployer:worker:{node}")
    first_token = r.hget(task_key, "token")
    try:
        os.kill(victim.pid, signal.SIGKILL)  # the main process only: its pool is orphaned
        victim.wait(timeout=10)

        def started_elsewhere() -> bool:
            return any(
                e["type"] == "STAGE_STARTED"
                and e["taskId"] == task_id
                and not e["worker"].startswith(node)
                for e in plan_events(r, plan_id)
            )

        # Well under the 30 s poll countdown and the 60 s lease: the heartbeat did it.
        wait_for(started_elsewhere, timeout=15, what="tenant running again on the survivor")
        wait_for(
            lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED",
            timeout=30,
            what="plan COMPLETED after the kill",
        )
    finally:
        try:
            os.killpg(victim.pid, signal.SIGKILL)  # the orphaned pool processes
        except ProcessLookupError:
            pass

    got = outcome(r, plan_id, version=20)
    assert got.statuses == {"COMPLETED": 1} and not got.stuck and not got.wrong_version
    assert not got.completed_twice
    events = [e for e in plan_events(r, plan_id) if e.get("taskId") == task_id]
    kinds = [e["type"] for e in events]
    redriven = kinds.index("TASK_REDRIVEN")
    assert events[redriven]["from"] == first_token
    assert events[redriven]["reason"] == f"worker lost: {node}"
    # No overlap: before the take-over only the dead node ran the tenant, after it never did;
    # the lease was taken exactly twice (once per run).
    assert all(e["worker"].startswith(node) for e in events[:redriven] if "worker" in e)
    assert not any(e.get("worker", "").startswith(node) for e in events[redriven:])
    assert kinds.count("TASK_COMPLETED") == 1
    assert r.get(f"deployer:lease-epoch:{tenant}") == "2"
    # Forgotten by the first pass that finds nothing of it left.
    wait_for(lambda: r.zscore("deployer:workers", node) is None, what="dead node forgotten")


def test_pool_process_killed_mid_stage_runs_the_stage_again_at_once_under_the_same_run(
    supervisor, r, session_fleet
):
    """The main process lives on (heartbeat intact): `task_reject_on_worker_lost` requeues
    the stage, which starts again under the same token; nothing is re-driven."""
    tenant, plan_id = unique("childkill"), unique()
    task_id = task_id_for(plan_id, tenant)
    # The instance holds the poll: the pool process is provably inside the stage.
    session_fleet.behave(tenant, Behaviour(hang=True))
    supervisor.env.update(SLOW_FALLBACKS, DEPLOYER_HTTP_TIMEOUT_SECONDS="25")
    supervisor.start("w1")
    DeployerClient().submit(plan(plan_id, [bg_tenant(tenant)]))
    wait_for(lambda: r.hget(f"icc_ai_ops_srv:tenant_config:{tenant}", "metadata"), what="written")
    worker = r.hget(f"deployer:task:{task_id}", "worker")
    child = worker.rpartition("/")[2]
    assert int(child) != supervisor.procs["w1"].pid  # a pool process, not the main one

    os.kill(int(child), signal.SIGKILL)
    session_fleet.behave(tenant, Behaviour())

    def starts() -> int:
        evs = plan_events(r, plan_id)
        return sum(1 for e in evs if e["type"] == "STAGE_STARTED" and e["taskId"] == task_id)

    wait_for(lambda: starts() == 2, timeout=15, what="the stage started again")
    wait_for(
        lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED",
        timeout=30,
        what="plan COMPLETED after the pool process kill",
    )
    got = outcome(r, plan_id, version=20)
    assert got.statuses == {"COMPLETED": 1} and not got.completed_twice and not got.stuck
    assert got.redriven == 0 and got.redeliveries == 1  # same run, counted once
    assert r.get(f"deployer:lease-epoch:{tenant}") == "1"  # one run held the tenant throughout
    assert supervisor.procs["w1"].poll() is None


def test_a_dead_worker_holding_another_workers_tenant_gives_it_back_within_seconds(
    supervisor, r, session_fleet
):
    """The tenant's last poll ran on w1, which then stopped cleanly; its next poll (a 30 s
    countdown) went back to the queue and is held by w2. w2 dies: the task's `worker` names
    w1, so only w2's published holds can bring the tenant back before the 60 s lease."""
    tenant, plan_id = unique("holdkill"), unique()
    task_id = task_id_for(plan_id, tenant)
    session_fleet.behave(tenant, Behaviour(delay=1.0))
    supervisor.env.update(SLOW_FALLBACKS)
    w1 = supervisor.start("w1")
    DeployerClient().submit(plan(plan_id, [bg_tenant(tenant)]))
    wait_for(lambda: session_fleet.stats(tenant)["polls"] >= 1, what="first poll answered")
    runner = r.hget(f"deployer:task:{task_id}", "worker").rpartition("/")[0]
    assert runner.startswith("w1-")
    w2 = supervisor.start("w2")
    os.killpg(w1.pid, signal.SIGTERM)  # warm shutdown: its held re-poll goes back to the queue
    w1.wait(timeout=30)

    def holder() -> str | None:
        for key in r.scan_iter("deployer:worker-holds:w2-*"):
            if r.hexists(key, task_id):
                return key.removeprefix("deployer:worker-holds:")
        return None

    node = wait_for(holder, what="w2 holds the re-poll and published it")
    supervisor.start("w3")
    try:
        os.kill(w2.pid, signal.SIGKILL)
        w2.wait(timeout=10)

        def started_again() -> bool:
            return any(
                e["type"] == "STAGE_STARTED" and e["taskId"] == task_id and e["worker"][:3] == "w3-"
                for e in plan_events(r, plan_id)
            )

        wait_for(started_again, timeout=15, what="tenant running again on w3")
        wait_for(
            lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED",
            timeout=30,
            what="plan COMPLETED after the holder's death",
        )
    finally:
        try:
            os.killpg(w2.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    got = outcome(r, plan_id, version=20)
    assert got.statuses == {"COMPLETED": 1} and not got.completed_twice and not got.stuck
    redriven = [e for e in plan_events(r, plan_id) if e["type"] == "TASK_REDRIVEN"]
    assert [e["reason"] for e in redriven] == [f"worker lost: {node}"]


def test_parked_tenants_of_a_killed_worker_recover_within_seconds_once(
    supervisor, r, session_fleet
):
    """Acks expected, background poll 30 s away: the tenants' HealthChecks are parked in
    Redis (deployer/parking.py), last polled by the victim. kill -9 of its main process: the
    survivor takes them over (new token: the parked re-sends of the dead run are dropped)
    and every tenant completes once, well before the background poll."""
    plan_id = unique("parkkill")
    tenants = [f"{plan_id}-t{i}" for i in range(6)]
    for tenant in tenants:
        session_fleet.behave(tenant, Behaviour(delay=1.0))
    supervisor.env.update(
        SLOW_FALLBACKS,
        DEPLOYER_FLEET_ACKS="true",  # the session fleet never acks: only polling finishes
        DEPLOYER_VERIFY_MAX_ATTEMPTS="3",  # 60 s of patience
        DEPLOYER_ACK_POLLS_PER_MINUTE="1",  # one background poll: after 30 s (lease / 2)
    )
    supervisor.start("w1")
    DeployerClient().submit(plan(plan_id, [bg_tenant(t) for t in tenants], maxConcurrency=6))
    task_ids = [task_id_for(plan_id, t) for t in tenants]
    wait_for(
        lambda: all(r.zscore("deployer:parked", t) is not None for t in task_ids),
        timeout=20,
        what="every tenant parked",
    )
    supervisor.start("w2")
    victim = supervisor.procs["w1"]
    try:
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        wait_for(
            lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED",
            timeout=15,
            what="plan COMPLETED within 15 s of the kill",
        )
    finally:
        try:
            os.killpg(victim.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    got = outcome(r, plan_id, version=20)
    assert got.statuses == {"COMPLETED": 6} and not got.stuck and not got.wrong_version
    assert not got.completed_twice
    # What is still parked belongs to the dead run: dropped unsent when due (token fence).
    for task_id in r.zrange("deployer:parked", 0, -1):
        parked_token = r.hget(f"deployer:park:{task_id}", "token")
        assert parked_token != r.hget(f"deployer:task:{task_id}", "token")
