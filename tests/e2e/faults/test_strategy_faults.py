"""kill -9 of every worker while a plan bakes or waits for approval: the wait is
in Redis, so after a restart the plan moves on once, and nothing runs twice."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from deployer.client import DeployerClient
from deployer.lifecycle import Command
from tests.e2e.faults.checks import outcome, plan_events
from tests.helpers import bg_tenant, plan, unique, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


def _no_double_runs(r, plan_id: str, tenants: int) -> None:
    got = outcome(r, plan_id, version=20)
    keys = [f"deployer:task:{t}" for t in r.lrange(f"deployer:plan:{plan_id}:tenants", 0, -1)]
    failures = [  # what the assertion shows when a tenant did not complete
        r.hmget(key, "tenantId", "failedStage", "failureCode", "lastError")
        for key in keys
        if r.hget(key, "status") != "COMPLETED"
    ]
    assert got.statuses == {"COMPLETED": tenants}, failures
    assert not got.completed_twice and not got.wrong_version and not got.stuck
    events = plan_events(r, plan_id)
    started = Counter(e["wave"] for e in events if e["type"] == "WAVE_STARTED")
    assert set(started.values()) == {1}, started  # each wave started exactly once
    running = Counter(e["taskId"] for e in events if e["type"] == "TASK_RUNNING")
    assert set(running.values()) == {1}, running  # each tenant's run started once


def test_every_worker_killed_during_a_bake_then_restarted_continues_once(supervisor, r):
    plan_id = unique("kbake")
    tenants = [unique("kb") for _ in range(3)]
    supervisor.start("w1")
    DeployerClient().submit(
        plan(plan_id, [bg_tenant(t) for t in tenants], strategy={"canary": 1, "bakeSeconds": 2})
    )
    key = f"deployer:plan:{plan_id}"
    wait_for(lambda: r.hget(key, "waveState") == "BAKING", timeout=30, what="wave 0 baking")
    supervisor.kill("w1")
    bake_until = int(r.hget(key, "bakeUntil"))
    # the bake ends while no worker runs: nothing moves...
    wait_for(lambda: time.time() * 1000 > bake_until + 1500, timeout=10, what="bake over")
    assert (r.hget(key, "waveState"), r.hget(key, "wave")) == ("BAKING", "0")
    # ...until a worker comes back: its plan-timer loop finds the due bake and starts wave 1
    supervisor.start("w2")
    wait_for(lambda: r.hget(key, "waveState") == "DONE", timeout=60, what="waves DONE")
    _no_double_runs(r, plan_id, 3)


def test_an_approval_given_while_every_worker_is_down_is_acted_on(supervisor, r):
    from tasks.runtime import controller

    plan_id = unique("kappr")
    tenants = [unique("ka") for _ in range(3)]
    supervisor.start("w1")
    DeployerClient().submit(
        plan(plan_id, [bg_tenant(t) for t in tenants], strategy={"canary": 1, "approval": "first"})
    )
    key = f"deployer:plan:{plan_id}"
    wait_for(lambda: r.hget(key, "waveState") == "AWAITING_APPROVAL", timeout=30,
             what="wave 1 awaiting approval")  # fmt: skip
    supervisor.kill("w1")
    # the operator approves (the CLI's path) while no worker runs: stored, wave 1 queued
    answer = controller().execute(Command.APPROVE, {"planId": plan_id, "wave": 1}, by="ops")
    assert answer["ok"] and answer["wave"] == 1
    assert r.hget(key, "waveState") == "RUNNING" and r.hget(key, "wave") == "1"
    assert r.hget(key, "status") == "RUNNING"
    supervisor.start("w2")
    wait_for(lambda: r.hget(key, "waveState") == "DONE", timeout=60, what="waves DONE")
    _no_double_runs(r, plan_id, 3)
    approved = [e for e in plan_events(r, plan_id) if e["type"] == "WAVE_APPROVED"]
    assert [(e["wave"], e["by"]) for e in approved] == [("1", "ops")]
