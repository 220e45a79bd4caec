"""Many producers at once: every submit is answered (the producer pool is never exhausted)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.helpers import bg_tenant, plan, task_rows, unique, wait_for


def test_forty_concurrent_submits_are_all_answered_and_run(worker, r):
    from tasks.runtime import planner

    payloads = [plan(unique(), [bg_tenant(unique("t")), bg_tenant(unique("t"))]) for _ in range(40)]
    with ThreadPoolExecutor(max_workers=40) as pool:
        futures = [pool.submit(planner().submit, p) for p in payloads]
        # A deadlocked producer pool shows up here as a timeout, not as a hung suite.
        answers = [f.result(timeout=60) for f in futures]
    assert [a["code"] for a in answers] == ["ACCEPTED"] * 40
    for p in payloads:
        wait_for(
            lambda p=p: r.hget(f"deployer:plan:{p['planId']}", "status") == "COMPLETED",
            timeout=60,
            what=f"{p['planId']} COMPLETED",
        )


def test_the_same_plan_submitted_at_once_is_written_exactly_once(worker, r):
    from tasks.runtime import planner

    payload = plan(unique(), [bg_tenant(unique("t")) for _ in range(3)])
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = [
            f.result(timeout=60)
            for f in [pool.submit(planner().submit, payload) for _ in range(12)]
        ]
    codes = sorted(a["code"] for a in answers)
    assert codes == ["ACCEPTED"] + ["ALREADY_SUBMITTED"] * 11
    plan_id = payload["planId"]
    wait_for(lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED", what="done")
    assert r.llen(f"deployer:plan:{plan_id}:tenants") == 3


def test_a_resubmitted_plan_that_was_written_but_never_sent_is_started(worker, r):
    """A worker that died between writing a plan and sending its chains: the redelivered
    submit finds the plan and fills its slots instead of leaving it waiting forever."""
    from tasks.runtime import planner, settings

    payload = plan(unique(), [bg_tenant(unique("t")) for _ in range(2)])
    plan_id, rows = task_rows(payload, settings())
    assert planner().store.create_plan(plan_id, rows, 10, "r-")
    assert r.hget(f"deployer:plan:{plan_id}", "c:PENDING") == "2"  # written, not sent
    assert planner().submit(payload)["code"] == "ALREADY_SUBMITTED"
    wait_for(
        lambda: r.hget(f"deployer:plan:{plan_id}", "status") == "COMPLETED",
        what="plan started by the resubmission and COMPLETED",
    )
