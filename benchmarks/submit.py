"""Figure 3: submit a 10,000-tenant plan (maxConcurrency 500), from the caller's send to
the plan RUNNING with its first wave of 500 chains enqueued.

The worker consumes only `deployer.control`, so the first wave stays in the stage queue
where it is counted (LLEN), instead of being raced by the stages themselves.
"""

from __future__ import annotations

import time
import uuid

from benchmarks import common

TENANTS = 10_000
WAVE = 500
REPEATS = 3
STAGE_QUEUE = "deployer.stages"


#: kombu's Redis transport keeps priority levels as sibling lists of the queue. Named, not
#: SCANned: with 10,000 task keys a SCAN for them took longer than the submit it timed.
STAGE_LISTS = [STAGE_QUEUE, *(f"{STAGE_QUEUE}\x06\x16{p}" for p in (3, 6, 9))]


def enqueued(server: common.Remote) -> int:
    pipe = server.r.pipeline(transaction=False)
    for key in STAGE_LISTS:
        pipe.llen(key)
    return sum(int(n) for n in pipe.execute())


def once(server: common.Server, services: list[str]) -> dict[str, float]:
    server.r.delete(*STAGE_LISTS)
    plan_id = f"submit-{uuid.uuid4().hex[:8]}"
    p = common.plan(plan_id, TENANTS, services, WAVE)
    t0 = time.perf_counter()
    common.submit(p)
    sent = time.perf_counter()
    common.wait_until(lambda: common.plan_status(server, plan_id) == "RUNNING", 60, 0.002)
    running = time.perf_counter()
    common.wait_until(lambda: enqueued(server) >= WAVE, 60, 0.002)
    wave = time.perf_counter()
    return {"send_s": sent - t0, "running_s": running - t0, "first_wave_s": wave - t0}


def main() -> None:
    server = common.setup()
    with common.worker(concurrency=2, queues="deployer.control"):
        once(server, ["blue-green-gateway"])  # warm up
        runs = [once(server, ["blue-green-gateway"]) for _ in range(REPEATS)]
    common.emit(
        "submit.10k",
        tenants=TENANTS,
        max_concurrency=WAVE,
        first_wave_s_median=round(common.median([r["first_wave_s"] for r in runs]), 3),
        first_wave_s_runs=[round(r["first_wave_s"], 3) for r in runs],
        running_s_median=round(common.median([r["running_s"] for r in runs]), 3),
        caller_send_s_median=round(common.median([r["send_s"] for r in runs]), 3),
        goal_s=1.0,
    )


if __name__ == "__main__":
    main()
