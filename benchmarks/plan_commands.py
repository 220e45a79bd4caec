"""The emergency brake on a big plan: how long `deployer pause|resume|retry|rollback|cancel
--plan P` takes to answer, and how long its per-task bookkeeping then runs in the
background, from the CLI's code path (`Controller.execute`), no worker needed.

The plan is created through the store (its tasks PENDING, a first wave holding slots, 50 of
them RUNNING as if mid-stage); each command runs on it in turn, and the background part is
the plan-timer loop's `continue_jobs` run here until the job is done. Version 0.2's first
strategy pass took 11.7 s to pause a 20,000-tenant plan (one compare-and-set per task).
Usage: `python -m benchmarks.plan_commands [TENANTS]` (default 100,000).
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
    store.create_plan("big", rows, 50, "run-")
    created = time.perf_counter() - started
    for slot in store.fill("big", max_batch=50):  # a first wave in flight, as after a submit
        server.r.hset(f"deployer:task:{slot.task_id}", mapping={"status": "RUNNING"})
    server.r.hincrby("deployer:plan:big", "c:PENDING", -50)
    server.r.hincrby("deployer:plan:big", "c:RUNNING", 50)
    controller = Controller(Planner(store, settings, lambda dispatches: None))

    def timed(command: Command) -> None:
        server.r.config_resetstat()
        t0 = time.perf_counter()
        answer = controller.execute(command, {"planId": "big"}, by="bench", reason="bench")
        answered = time.perf_counter() - t0
        slices = 0
        while server.r.hget("deployer:plan:big", "job"):
            controller.plans.continue_jobs(0.2)
            slices += 1
        finished = time.perf_counter() - t0
        plan = server.r.hgetall("deployer:plan:big")
        scripts = server.r.info("commandstats").get("cmdstat_evalsha", {})
        common.emit(
            f"plan_{command.value}",
            tenants=tenants,
            answer_s=round(answered, 3),
            answer=answer["code"],
            pending_at_answer=answer.get("pending", 0),
            background_s=round(finished - answered, 2),
            status=plan.get("status"),
            counts={k[2:]: int(v) for k, v in plan.items() if k.startswith("c:") and int(v)},
            # Redis is busy for this long per script (other clients wait meanwhile)
            server_ms_per_script=round(float(scripts.get("usec_per_call", 0)) / 1000, 2),
        )

    common.emit("plan_commands_setup", tenants=tenants, create_s=round(created, 2))
    timed(Command.PAUSE)
    timed(Command.RESUME)
    timed(Command.CANCEL)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
