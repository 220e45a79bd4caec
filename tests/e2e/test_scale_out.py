"""Horizontal scaling: three `celery worker` processes on one broker share a 300-tenant plan,
every tenant completes exactly once, and no tenant runs on two workers at once."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from deployer.client import DeployerClient
from tests.helpers import bg_tenant, plan, unique, wait_for

pytestmark = pytest.mark.e2e
TENANTS = 300
NODES = ("w1", "w2", "w3")


def plan_events(r, plan_id: str) -> list[dict[str, str]]:
    return [f for _id, f in r.xrange("deployer:events", "-", "+") if f.get("planId") == plan_id]


def test_three_workers_share_a_300_tenant_plan_each_tenant_once(spawn_worker, r):
    for name in NODES:
        spawn_worker(name, concurrency=2)
    plan_id = unique("scale")
    tenants = [bg_tenant(f"{plan_id}-t{i:03}") for i in range(TENANTS)]
    DeployerClient().submit(plan(plan_id, tenants, maxConcurrency=60))
    wait_for(
        lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED",
        timeout=45,
        interval=0.2,
        what="300-tenant plan COMPLETED",
    )
    assert int(r.hget(f"deployer:plan:{plan_id}", "c:COMPLETED")) == TENANTS

    events = plan_events(r, plan_id)
    by_type = defaultdict(Counter)
    for e in events:
        by_type[e["type"]][e.get("taskId")] += 1
    # Exactly once: one start, one completion of the stage, one TASK_COMPLETED per tenant.
    for kind in ("STAGE_STARTED", "STAGE_COMPLETED", "TASK_COMPLETED"):
        assert len(by_type[kind]) == TENANTS, kind
        assert set(by_type[kind].values()) == {1}, f"{kind} repeated"

    # Spread (if the session's in-process worker is up, it is one more consumer: count ours).
    nodes = Counter(e["worker"].split("@", 1)[0] for e in events if e["type"] == "STAGE_STARTED")
    for name in NODES:
        assert nodes[name] > 0, f"{name} ran nothing: {dict(nodes)}"
    task_workers = {
        r.hget(f"deployer:task:{t}", "worker").split("@", 1)[0] for t in by_type["TASK_COMPLETED"]
    }
    assert set(NODES) <= task_workers

    # Never two workers at once: per tenant, [STAGE_STARTED, STAGE_COMPLETED] spans recorded
    # by different workers never overlap (the tenant lease; here each stage ran once).
    spans: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    starts = {e["taskId"]: e for e in events if e["type"] == "STAGE_STARTED"}
    for e in events:
        if e["type"] == "STAGE_COMPLETED":
            s = starts[e["taskId"]]
            spans[e["taskId"]].append((int(s["ts"]), int(e["ts"]), s["worker"]))
    for task_id, runs in spans.items():
        runs.sort()
        for (_s1, e1, w1), (s2, _e2, w2) in zip(runs, runs[1:], strict=False):
            assert w1 == w2 or s2 >= e1, f"{task_id} ran on {w1} and {w2} at once"
