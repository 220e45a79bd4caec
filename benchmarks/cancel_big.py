"""Cancelling a big plan from the CLI's code path (`Controller.execute`), no worker needed.

The plan is created through the store (its tasks PENDING, a first wave holding slots), then
`deployer cancel --plan P` runs exactly what the CLI runs: it answers once the plan's flag is
set and a few slices are done (`answer_s`); the rest of the slices are driven here as every
worker's plan-timer loop drives them (`cancel_s`: until every task is cancelled). Version 0.1
took 2 min 19 s for 100,000 tenants when every task was its own compare-and-set round trip. Usage:
`python -m benchmarks.cancel_big [TENANTS]` (default 100,000).
"""

from __future__ import annotations

import json
import sys
import time

from benchmarks import common


def main(tenants: int) -> None:
    server = common.Server()
    from deployer.control import Controller
    from deployer.lifecycle import Command
    from deployer.planner import Planner
    from deployer.settings import Settings
    from deployer.state.store import Store, TaskRow

    settings = Settings(redis_url=server.url)
    store = Store(server.r, settings)
    config = json.dumps({"tenantId": "x"})
    rows = [TaskRow(f"t{i}", 1, config) for i in range(tenants)]
    started = time.perf_counter()
    store.create_plan("big", rows, 500, "run-")
    created = time.perf_counter() - started
    for slot in store.fill("big", max_batch=500):  # a first wave holds slots, as after a submit
        server.r.hset(f"deployer:task:{slot.task_id}", "status", "PENDING")
    controller = Controller(Planner(store, settings, lambda dispatches: None))
    server.r.config_resetstat()
    started = time.perf_counter()
    result = controller.execute(Command.CANCEL, {"planId": "big"}, by="bench", reason="bench")
    answered = time.perf_counter() - started
    # the rest of the slices, as every worker's plan-timer loop does them
    while server.r.hget("deployer:plan:big", "job"):
        controller.plans.continue_jobs(0.2)
    elapsed = time.perf_counter() - started
    plan = server.r.hgetall("deployer:plan:big")
    scripts = server.r.info("commandstats").get("cmdstat_evalsha", {})
    common.emit(
        "cancel_big",
        tenants=tenants,
        create_s=round(created, 2),
        answer_s=round(answered, 2),
        cancel_s=round(elapsed, 2),
        answer=result["code"],
        status=plan.get("status"),
        cancelled=int(plan.get("c:CANCELLED", 0)),
        inflight=int(plan.get("inflight", 0)),
        # Redis is busy for this long per script (each slice; other clients wait meanwhile)
        scripts=int(scripts.get("calls", 0)),
        server_ms_per_script=round(float(scripts.get("usec_per_call", 0)) / 1000, 1),
        server_s_total=round(float(scripts.get("usec", 0)) / 1e6, 2),
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
