"""Waiting on a slow fleet costs latency, not throughput; acks cut the latency (issue 16).

1,000 tenants (blue-green-gateway: write, broadcast, HealthCheck of 2 instances), one
worker with 2 processes, all tenants in flight (maxConcurrency 1000). Run A: the fleet
reports a new version at once; run B: each instance reports it 1 s after reading it.
Goal (issue 4): wall(B) <= wall(A) + 3 s (one verify interval), because a waiting
HealthCheck re-sends its stage with a countdown instead of holding a process.

Issue 16 goal 2, with the push path (deployer/parking.py): run B again with the fleet's
acks and a worker that expects them (`DEPLOYER_FLEET_ACKS=true`): the median of (tenant's
stage done - the moment its instances could report the version) <= +0.3 s, with at most 5
polls per instance per minute of waiting. The rate is measured where waiting is long: a
"never" run (instances never report; each HealthCheck waits its whole patience, 27 s, then
fails), acks off and on: (polls per instance - the first) / minutes of patience.

    python -m benchmarks.fleet_wait [--tenants 1000] [--interval 3] [--never-tenants 100]

Prints one JSON line per run and one with the difference.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from typing import Any

from benchmarks import common


def tenants(prefix: str, n: int) -> list[dict[str, Any]]:
    return [
        {
            "tenantId": f"{prefix}-t{i:05d}",
            "planVersion": 20,
            "deployUnitName": "green",
            "networkEndpoints": [{"key": "r1", "sourceIp": "10.0.0.1", "targetDomain": "gw.g"}],
            "serviceNames": ["blue-green-gateway"],
        }
        for i in range(n)
    ]


def run(server: common.Server, fleet: Any, prefix: str, n: int) -> dict[str, float]:
    plan_id = f"{prefix}-{uuid.uuid4().hex[:6]}"
    before = fleet.stats(prefix)
    t0 = time.time()
    common.submit({"planId": plan_id, "maxConcurrency": n, "tenants": tenants(plan_id, n)})
    done = common.wait_plan(server, plan_id, timeout=600, interval=0.05)
    ends = sorted(common.task_end_times(server, plan_id))
    stats = fleet.stats(prefix)
    polls = stats["polls"] - before["polls"]
    lags = after_ready(server, fleet, plan_id)
    return {
        "wall_s": round(done - t0, 2),
        "p50_end_s": round(common.median(ends) - t0, 2),
        "polls": polls,
        "polls_per_instance": round(polls / (2 * n), 2),
        "acks": stats["acks"] - before["acks"],
        "max_waiting_tenants": stats["max_waiting"],
        # a tenant's stage done vs the moment its instances could report
        "p50_done_after_ready_s": round(common.median(lags), 3),
        "p90_done_after_ready_s": round(common.pct(lags, 0.9), 3),
    }


def run_never(server: common.Server, fleet: Any, n: int, patience: float) -> dict[str, float]:
    """Instances that never report: every HealthCheck waits its whole patience, then fails.
    Polls per instance per minute of that wait (the poll right after the write aside)."""
    plan_id = f"never-{uuid.uuid4().hex[:6]}"
    before = fleet.stats("never")["polls"]
    t0 = time.time()
    common.submit({"planId": plan_id, "maxConcurrency": n, "tenants": tenants(plan_id, n)})
    common.wait_until(
        lambda: common.plan_status(server, plan_id) in ("FAILED", "COMPLETED"), 600, 0.2
    )
    per_instance = (fleet.stats("never")["polls"] - before) / (2 * n)
    return {
        "wall_s": round(time.time() - t0, 2),
        "patience_s": patience,
        "polls_per_instance": round(per_instance, 2),
        "polls_per_instance_per_min": round((per_instance - 1) / (patience / 60), 2),
    }


def after_ready(server: common.Server, fleet: Any, plan_id: str) -> list[float]:
    """Per tenant: its (single-stage) task's end minus the wall clock from which every
    instance could report the version (`Fleet.ready_at`)."""
    ids = server.r.lrange(f"deployer:plan:{plan_id}:tenants", 0, -1)
    pipe = server.r.pipeline(transaction=False)
    for task_id in ids:
        pipe.hmget(f"deployer:task:{task_id}", ["tenantId", "endedAt"])
    lags = []
    for tenant, ended in pipe.execute():
        ready = fleet.ready_at(tenant)
        if ended and ready is not None:
            lags.append(int(ended) / 1000 - ready)
    return lags


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=3.0)
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--never-tenants", type=int, default=100)
    args = parser.parse_args()
    server = common.setup(DEPLOYER_VERIFY_INTERVAL_SECONDS=str(args.interval))

    from deployer.fleet import Behaviour, Fleet
    from deployer.settings import Settings

    s = Settings(verify_interval_seconds=args.interval)
    patience = (s.verify_max_attempts - 1) * s.verify_interval_seconds
    instances = {"blue-green-gateway": ["127.0.0.1:0", "127.0.0.1:0"]}
    load = os.getloadavg()[0]
    with Fleet(
        instances, server.url, s.key_prefix, s.pubsub_topic, s.verify_path, acks=True
    ) as fleet:
        fleet.behave("atonce", Behaviour(delay=0.0))
        fleet.behave("slow", Behaviour(delay=args.delay))
        fleet.behave("acked", Behaviour(delay=args.delay))
        fleet.behave("never", Behaviour(never=True))
        os.environ["DEPLOYER_INSTANCES"] = json.dumps(fleet.addresses)
        # Acks off (the default: exactly the countdown schedule as before the push path).
        with common.worker(app="tasks", concurrency=2, env=dict(os.environ)):
            run(server, fleet, "warmup", 20)
            at_once = run(server, fleet, "atonce", args.tenants)
            common.emit("fleet_wait.converged_at_once", tenants=args.tenants, **at_once)
            slow = run(server, fleet, "slow", args.tenants)
            common.emit(
                "fleet_wait.converge_after_delay", tenants=args.tenants, delay_s=args.delay,
                interval_s=args.interval, acks_expected=False, load_avg=load, **slow,
            )  # fmt: skip
            never_off = run_never(server, fleet, args.never_tenants, patience)
            common.emit("fleet_wait.never_converging", acks_expected=False, **never_off)
        # Acks on: the worker expects them, the fleet publishes them.
        env = dict(os.environ, DEPLOYER_FLEET_ACKS="true")
        with common.worker(app="tasks", concurrency=2, env=env):
            run(server, fleet, "warmup", 20)
            load = os.getloadavg()[0]
            acked = run(server, fleet, "acked", args.tenants)
            common.emit(
                "fleet_wait.converge_after_delay", tenants=args.tenants, delay_s=args.delay,
                interval_s=args.interval, acks_expected=True, load_avg=load, **acked,
            )  # fmt: skip
            never_on = run_never(server, fleet, args.never_tenants, patience)
            common.emit("fleet_wait.never_converging", acks_expected=True, **never_on)
    extra = round(slow["wall_s"] - at_once["wall_s"], 2)
    common.emit("fleet_wait.extra_wall_s", value=extra, goal_le=args.interval, met=extra <= 3.0)
    common.emit(
        "fleet_wait.goal2",
        p50_done_after_ready_s=acked["p50_done_after_ready_s"],
        polls_per_instance_per_min=never_on["polls_per_instance_per_min"],
        met=acked["p50_done_after_ready_s"] <= 0.3 and never_on["polls_per_instance_per_min"] <= 5,
        load_avg=round(os.getloadavg()[0], 2),
    )


if __name__ == "__main__":
    main()
