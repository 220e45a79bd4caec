"""A 10,000-tenant plan in 10 exponential waves (10, 20, ... 4,890 tenants) with
zero bake, against the same plan without a strategy: submit -> COMPLETED (and waves DONE).

What a strategy costs with no bake: the gap at each wave end (the last task of a wave
finishes alone, then the next wave's first maxConcurrency chains start), and one wave step
per wave. Goal: within 1.2x of the plan without a strategy.
"""

from __future__ import annotations

import json
import os
import time
import uuid

from benchmarks import common, plugins

TENANTS = int(os.environ.get("BENCH_STRATEGY_TENANTS", "10000"))
REPEATS = int(os.environ.get("BENCH_STRATEGY_REPEATS", "2"))
CAP = 500
WAVES: list[int] = []
STRATEGY = {"waves": {"type": "exponential", "size": 10, "factor": 2}, "bakeSeconds": 0}


def once(
    server: common.Server, services: list[str], strategy: dict | None, tenants: int = 0
) -> float:
    plan_id = f"strat-{uuid.uuid4().hex[:8]}"
    p = common.plan(plan_id, tenants or TENANTS, services, CAP)
    if strategy:
        p["strategy"] = strategy
    t0 = time.time()
    common.submit(p)
    done = common.wait_plan(server, plan_id, 300, 0.01)
    if strategy:
        common.wait_until(
            lambda: server.r.hget(f"deployer:plan:{plan_id}", "waveState") == "DONE", 30
        )
        WAVES.append(int(server.r.hget(f"deployer:plan:{plan_id}", "waves") or 0))
        done = time.time()
    return done - t0


def main() -> None:
    services = plugins.services("noop")[:1]
    # submit refuses a service with no instance (intake preflight); no-op stages call none
    server = common.setup(DEPLOYER_INSTANCES=json.dumps({s: ["127.0.0.1:9"] for s in services}))
    with common.worker(concurrency=2):
        once(server, services, None, tenants=200)  # warm up
        plain, waved = [], []
        for _ in range(REPEATS):  # alternated, so a busy moment of the machine hits both
            plain.append(once(server, services, None))
            waved.append(once(server, services, STRATEGY))
    ratio = common.median(waved) / common.median(plain)
    common.emit(
        "strategy.10_exponential_waves",
        tenants=TENANTS,
        max_concurrency=CAP,
        waves=WAVES[-1],
        no_strategy_s_runs=[round(x, 2) for x in plain],
        strategy_s_runs=[round(x, 2) for x in waved],
        ratio_median=round(ratio, 3),
        goal_ratio=1.2,
    )


if __name__ == "__main__":
    main()
