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
    assert node.endswith(f":{victim.pid}"), worker  # the stage names its main process
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
