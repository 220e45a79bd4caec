"""Load under faults: conflicting commands for one tenant; 1,000 tenants through 20 kill -9s."""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from deployer.client import DeployerClient
from tasks import runtime
from tests.e2e.faults.checks import failures, outcome, positioned_events
from tests.helpers import bg_tenant, plan, unique, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(300)]
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def test_fifty_concurrent_conflicting_submits_for_one_tenant_run_one_at_a_time(supervisor, r):
    supervisor.start("w1")
    supervisor.start("w2")
    tenant, shared = unique("hot"), unique()
    # 25 submit the same plan id; 25 submit their own plan for the same tenant.
    payloads = [plan(shared, [bg_tenant(tenant)]) for _ in range(25)]
    payloads += [plan(unique(), [bg_tenant(tenant, version=100 + i)]) for i in range(25)]
    random.Random(7).shuffle(payloads)
    planner = runtime.planner()
    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(planner.submit, payloads))

    codes = [a["code"] for a in answers]
    assert len(answers) == 50 and all(a["ok"] for a in answers)  # every request answered
    assert codes.count("ACCEPTED") == 26 and codes.count("ALREADY_SUBMITTED") == 24
    plan_ids = sorted({p["planId"] for p in payloads})
    wait_for(
        lambda: all(r.hget(f"deployer:plan:{p}", "status") in TERMINAL for p in plan_ids),
        timeout=200,
        what="all 26 plans finished",
    )
    # One run at a time: the RUNNING..COMPLETED windows of the tenant's tasks never overlap,
    # in the order Redis ran the scripts that took and released the tenant lease (the events
    # stream's entry IDs). Their `ts` cannot tell: each is the clock of a worker, read before
    # its script waited its turn, so a begin that read its clock before the previous run's
    # end, and ran after it, looked like an overlap of a few ms.
    # A plan created before one that already deployed the tenant does not apply its older
    # config: its task ends SUPERSEDED (the plan is still COMPLETED: finished, not failed).
    windows = []
    tasks = {}
    for p in plan_ids:
        assert r.hget(f"deployer:plan:{p}", "status") == "COMPLETED", failures(r, p)
        (task_id,) = r.lrange(f"deployer:plan:{p}:tenants", 0, -1)
        tasks[task_id] = r.hgetall(f"deployer:task:{task_id}")
        assert tasks[task_id]["status"] in ("COMPLETED", "SUPERSEDED")
        if tasks[task_id]["status"] == "SUPERSEDED":
            continue
        events = positioned_events(r, p)
        start = min(at for at, e in events if e["type"] == "TASK_RUNNING")
        end = max(at for at, e in events if e["type"] == "TASK_COMPLETED")
        windows.append((start, end))
    windows.sort()
    overlaps = sum(1 for a, b in zip(windows, windows[1:], strict=False) if b[0] < a[1])
    assert overlaps == 0

    def rank(task_id: str) -> tuple[int, str]:
        return int(tasks[task_id]["createdAt"]), task_id

    newest = max(tasks, key=rank)
    assert tasks[newest]["status"] == "COMPLETED"  # the newest plan always applies...
    version = json.loads(tasks[newest]["config"])["planVersion"]
    assert r.hget(f"icc_ai_ops_srv:tenant_config:{tenant}", "metadata") == json.dumps(
        {"version": version}, separators=(",", ":")
    )  # ...and its config is what the tenant keeps
    superseded = [t for t, v in tasks.items() if v["status"] == "SUPERSEDED"]
    assert all(rank(tasks[t]["supersededBy"]) > rank(t) for t in superseded)
    print(
        f"\nconflicting submits: requests=50 answered=50 runs=26 overlaps={overlaps} "
        f"superseded={len(superseded)}"
    )


def test_thousand_tenants_complete_through_twenty_worker_kills(supervisor, r):
    n, kills_wanted = 1000, 20
    names = ["w1", "w2", "w3"]
    for name in names:
        supervisor.start(name)
    plan_id = unique("load")
    rng = random.Random(20)
    started = time.monotonic()
    DeployerClient().submit(
        plan(plan_id, [bg_tenant(f"{plan_id}-t{i}") for i in range(n)], maxConcurrency=40)
    )

    def done() -> int:
        return int(r.hget(f"deployer:plan:{plan_id}", "c:COMPLETED") or 0)

    # Kill when progress crosses each of 20 marks spread over the first 80 % of the run.
    marks = [int(n * 0.8 * (k + 1) / kills_wanted) for k in range(kills_wanted)]
    deadline = time.monotonic() + 240
    for mark in marks:
        wait_for(lambda m=mark: done() >= m, timeout=120, what=f"{mark} tenants completed")
        supervisor.kill_random(rng)
        supervisor.restart_dead()  # the supervisor (systemd/k8s) brings it back
        assert time.monotonic() < deadline
    wait_for(
        lambda: r.hget(f"deployer:plan:{plan_id}", "status") in TERMINAL,
        timeout=150,
        what="the plan finished",
    )
    elapsed = time.monotonic() - started
    got = outcome(r, plan_id, version=20)
    stale_refused = supervisor.logs_text().count("stale")
    print(
        f"\n1000 tenants: kills={supervisor.kills} completed={got.statuses['COMPLETED']} "
        f"stuck={len(got.stuck)} wrong_version={len(got.wrong_version)} "
        f"completed_twice={len(got.completed_twice)} redriven={got.redriven} "
        f"redeliveries={got.redeliveries} stale_dropped={stale_refused} in {elapsed:.1f}s"
    )
    assert supervisor.kills == kills_wanted
    assert got.statuses == {"COMPLETED": n}, failures(r, plan_id)
    assert not got.stuck and not got.wrong_version and not got.completed_twice
