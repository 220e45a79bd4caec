"""Many producers at once: every submit is answered (the producer pool is never exhausted)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.helpers import bg_tenant, plan, unique, wait_for


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
