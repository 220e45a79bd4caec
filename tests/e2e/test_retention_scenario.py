"""The retention scenario of the issue, end to end with real `celery worker` processes whose
own retention pass runs every second with a retention of seconds: three plans of 51 tenants
on the same tenants; the first two leave Redis, Redis holds about what one plan needs, the
tenant's history lists all three newest first, an archived plan's status and events answer
(marked archived), and `rollback --tenant` still works."""

from __future__ import annotations

import json
from typing import Any

import pytest

from deployer.client import DeployerClient
from deployer.state import keys
from tests.helpers import bg_tenant, plan, run_cli, unique, wait_for

pytestmark = pytest.mark.e2e

RETENTION = {
    "DEPLOYER_RETENTION_SECONDS": "2",
    "DEPLOYER_RETENTION_INTERVAL_SECONDS": "1",
}
#: Streams bounded by count whatever retention does (the live feed, refusals).
BOUNDED = {keys.EVENTS, keys.REJECTIONS, keys.DEAD_LETTERS}


def state_bytes(r: Any, ours: tuple[str, ...]) -> int:
    """Bytes of this test's deployer state in Redis (MEMORY USAGE of every deployer key that
    names one of its plans or tenants; the count-bounded global streams left out). Earlier
    tests' plans in the session's Redis are not this test's to measure."""
    total = 0
    for key in r.scan_iter("deployer:*", count=5000):
        if key not in BOUNDED and any(mark in key for mark in ours):
            total += r.memory_usage(key, samples=0) or 0
    return total


def hold_other_plans(r: Any) -> None:
    """Earlier tests in this process left finished plans here (one of 100,000 tenants): a
    retention pass archives the oldest first and would spend minutes on them before this
    test's plans. Mark them changed just now, so the pass leaves them for later."""
    far = 10**13  # epoch ms in the year 2286: "changed recently" to any pass of this test
    plans = r.zrange(keys.PLANS, 0, -1)
    with r.pipeline(transaction=False) as pipe:
        for plan_id in plans:
            pipe.exists(keys.plan(plan_id))
        present = [p for p, there in zip(plans, pipe.execute(), strict=True) if there]
        for plan_id in present:
            pipe.hset(keys.plan(plan_id), "updatedAt", far)
        pipe.execute()


def cli_json(*args: str) -> Any:
    result = run_cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_three_plans_on_the_same_tenants_leave_one_plans_worth_of_state_in_redis(spawn_worker, r):
    from tests.helpers import worker_env

    hold_other_plans(r)
    spawn_worker("w1", concurrency=4, env=worker_env(**RETENTION))
    client = DeployerClient()
    tenants = [unique("ret") for _ in range(51)]
    plans: list[str] = []
    after_one = 0
    for version in (31, 32, 33):
        plan_id = unique()
        body = plan(plan_id, [bg_tenant(t, version=version, prev_version=version - 1)
                              for t in tenants], maxConcurrency=51)  # fmt: skip
        client.submit(body)
        wait_for(lambda p=plan_id: r.hget(keys.plan(p), "status") == "COMPLETED", timeout=120,
                 what=f"plan {plan_id} COMPLETED")  # fmt: skip
        plans.append(plan_id)
        if version == 31:
            # the plan stays while its tasks are the tenants' newest: archived, kept small
            wait_for(lambda p=plan_id: r.hget(keys.plan(p), "archivedAt"), timeout=30,
                     what="first plan archived")  # fmt: skip
            after_one = state_bytes(r, (*tenants, *plans))
    first, second, third = plans

    def gone(plan_id: str) -> bool:
        return not any(True for _ in r.scan_iter(f"deployer:plan:{plan_id}*")) and not any(
            r.exists(keys.task(f"{plan_id}:{t}")) for t in tenants[:5]
        )

    wait_for(lambda: gone(first) and gone(second), timeout=60, what="first two plans gone")
    wait_for(lambda: r.hget(keys.plan(third), "archivedAt"), timeout=30, what="third archived")
    after_three = state_bytes(r, (*tenants, *plans))
    print(f"deployer state in Redis: {after_one} B after one plan, {after_three} B after three")
    assert after_three <= 1.5 * after_one, (after_one, after_three)

    history = cli_json("history", "--tenant", tenants[7])
    rows = [(h["planId"], h["planVersion"]) for h in history["items"]]
    assert rows[:3] == [(third, 33), (second, 32), (first, 31)]
    assert all(h["status"] == "COMPLETED" and h["runKind"] == "FORWARD" for h in history["items"])
    assert [h["archived"] for h in history["items"]] == [False, True, True]

    status = cli_json("status", first)
    assert status["archived"] is True and status["status"] == "COMPLETED"
    assert status["total"] == 51 and status["commands"] == []
    task = cli_json("task", "--plan", first, "--tenant", tenants[7])
    assert task["archived"] is True and task["planVersion"] == 31
    assert any(e.get("stage") == "blue-green-gateway" for e in task["timeline"])
    events = run_cli("events", "--plan", first, "--all", "--json")
    kinds = [json.loads(line)["type"] for line in events.stdout.splitlines() if line.strip()]
    assert kinds[0] == "PLAN_CREATED" and "PLAN_COMPLETED" in kinds and len(kinds) > 51

    listed = cli_json("plans", "--limit", "500")
    where = {p["planId"]: p["archived"] for p in listed["items"]}
    assert where[first] is True and where[second] is True

    refused = run_cli("rollback", "--plan", first, "--json")
    assert refused.exit_code == 2 and "PLAN_ARCHIVED" in refused.output

    # the tenant's newest task stays live: rollback --tenant goes back to version 32
    rolled = run_cli("rollback", "--tenant", tenants[7], "--wait", "--timeout", "60")
    assert rolled.exit_code == 0, rolled.output
    hash_key = f"icc_ai_ops_srv:tenant_config:{tenants[7]}"
    assert json.loads(r.hget(hash_key, "metadata"))["version"] == 32
