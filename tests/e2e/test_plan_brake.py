"""The emergency brake on a big plan, with a real `celery worker` and the real fleet: a
plan-level pause, resume or cancel of 100,000 tenants answers within a second from the
CLI's code path, takes effect for the whole plan at once (no stage of the plan starts after
the pause answered, read from the plan's events), and its per-task bookkeeping follows in
the background (the worker's plan-timer loop).

In the e2e session: it writes a few hundred thousand events, which other sessions' readers
of the global stream (the metrics exporter) would then have to read through."""

from __future__ import annotations

import json
import time

import pytest

from deployer.client import DeployerClient
from deployer.lifecycle import Command
from deployer.state import keys
from deployer.state.store import TaskRow, now_ms
from tests.helpers import bg_tenant, unique, wait_for

pytestmark = pytest.mark.e2e


def plan_events(r, plan_id, since_ms=0):
    return [f for _, f in r.xrange(keys.events_plan(plan_id), min=f"{since_ms}-0")]


@pytest.mark.timeout(600)
def test_pause_and_resume_of_a_100000_tenant_plan_answer_within_a_second(spawn_worker, r):
    spawn_worker("brake", concurrency=4)
    client = DeployerClient()
    store = client.store
    plan_id = unique("huge")
    rows = [TaskRow(f"{plan_id}-{i}", 1, json.dumps(bg_tenant(f"{plan_id}-{i}")))
            for i in range(100_000)]  # fmt: skip
    assert store.create_plan(plan_id, rows, 50, "run-")
    from tasks.runtime import planner

    planner().dispatch(plan_id)  # the first 50, as a submit sends them
    key = keys.plan(plan_id)
    wait_for(lambda: int(r.hget(key, "c:COMPLETED") or 0) >= 20, timeout=120, what="running")

    def timed(command: Command) -> tuple[dict, float]:
        started = time.monotonic()
        answer = client.execute(command, {"planId": plan_id}, by="ops", reason="brake")
        return answer, time.monotonic() - started

    paused, took = timed(Command.PAUSE)
    answered = now_ms()
    assert paused["ok"], paused
    assert took < 1.0, f"pause answered in {took:.2f}s"
    wait_for(lambda: not r.hget(key, "job") and r.hget(key, "status") == "PAUSED", timeout=240,
             what="every task paused, in the background")  # fmt: skip
    after = plan_events(r, plan_id, answered - 5000)
    starts = [e for e in after if e["type"] in ("STAGE_STARTED", "TASK_RUNNING")
              and int(e["ts"]) > answered]  # fmt: skip
    assert starts == [], starts[:3]
    counts = {s: int(r.hget(key, f"c:{s}") or 0) for s in ("PENDING", "RUNNING", "PAUSED")}
    assert counts["PENDING"] == counts["RUNNING"] == 0 and counts["PAUSED"] > 99_000
    assert [e["type"] for e in after].count("PLAN_PAUSE") == 1
    assert not r.exists(keys.plan_queue(plan_id))  # every queued tenant was paused

    resumed, took = timed(Command.RESUME)
    again = now_ms()
    assert resumed["ok"] and took < 1.0, (resumed, took)
    wait_for(lambda: any(e["type"] == "STAGE_STARTED" for e in plan_events(r, plan_id, again)),
             timeout=60, what="stages start again")  # fmt: skip

    cancelled, took = timed(Command.CANCEL)
    assert cancelled["ok"] and took < 1.0, (cancelled, took)
    wait_for(lambda: r.hget(key, "status") == "CANCELLED" and not r.hget(key, "job"),
             timeout=240, what="cancelled, every task")  # fmt: skip
