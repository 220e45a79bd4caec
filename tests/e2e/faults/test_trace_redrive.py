"""A re-driven tenant stays one trace: its worker killed (kill -9) mid-stage, the tenant is
re-driven from its checkpoint by another worker, and the attempts of both workers are spans
of the run's one trace (the context carries it; no message header survived the kill)."""

from __future__ import annotations

import os
import signal

import pytest

from deployer.client import DeployerClient
from deployer.fleet import Behaviour
from deployer.models import task_id_for
from tests.e2e.faults.checks import plan_events
from tests.e2e.faults.test_worker_death import SLOW_FALLBACKS
from tests.e2e.test_tracing import Receiver, traces_of
from tests.helpers import bg_tenant, plan, unique, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


def test_a_tenant_re_driven_after_its_worker_died_is_still_one_trace(supervisor, r, session_fleet):
    receiver = Receiver()
    tenant, plan_id = unique("trkill"), unique()
    task_key = f"deployer:task:{task_id_for(plan_id, tenant)}"
    session_fleet.behave(tenant, Behaviour(delay=1.0))  # the stage waits mid-stage
    supervisor.env.update(SLOW_FALLBACKS, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
                          OTEL_BSP_SCHEDULE_DELAY="100")  # fmt: skip
    try:
        supervisor.start("t1")
        supervisor.start("t2")
        DeployerClient().submit(plan(plan_id, [bg_tenant(tenant)]))
        wait_for(lambda: session_fleet.stats(tenant)["polls"] >= 1, what="first poll answered")

        def first_attempt_exported() -> bool:
            traces = traces_of(receiver.snapshot(), plan_id).get(tenant, {})
            return any(s.name == "deployer.stage blue-green-gateway"
                       and s.attributes.get("deployer.outcome") == "wait"
                       for members in traces.values() for s in members)  # fmt: skip

        wait_for(first_attempt_exported, timeout=20, what="the waiting attempt's span exported")
        victim_name = r.hget(task_key, "worker").split(":", 1)[0]  # the Celery node name
        name = victim_name.split("@", 1)[0].rsplit("-", 1)[0]
        victim = supervisor.procs[name]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED",
                 timeout=60, what="the tenant completed on the other worker")  # fmt: skip
        assert any(e["type"] == "TASK_REDRIVEN" for e in plan_events(r, plan_id))

        def both_workers_in_one_trace() -> bool:
            traces = traces_of(receiver.snapshot(), plan_id).get(tenant, {})
            if len(traces) != 1:
                return False
            ((_, members),) = traces.items()
            workers = {s.attributes.get("deployer.worker") for s in members
                       if s.name.startswith("deployer.stage ")}  # fmt: skip
            done = any(s.attributes.get("deployer.outcome") == "done" for s in members)
            return done and victim_name in workers and len(workers) == 2

        wait_for(both_workers_in_one_trace, timeout=20,
                 what="the dead worker's and the survivor's attempts in the one trace")  # fmt: skip
        ((_, members),) = traces_of(receiver.snapshot(), plan_id)[tenant].items()
        assert [s.name for s in members].count("deployer.submit") == 1
    finally:
        receiver.close()
