"""Hanging instances must not slow healthy tenants.

One worker of 2 processes. Healthy tenants deploy blue-green-gateway (2 instances that
converge at once); sick tenants deploy ob-service, whose only instance hangs (accepts the
request, never answers). Run A: N healthy tenants. Run B: the same N healthy tenants plus
M sick ones, interleaved, all in flight (maxConcurrency = N + M). Figure: the time until
the last healthy tenant is done, B / A (goal <= 1.2). `--before` runs B as the code
behaved before the probe bounds (5 s per poll, no circuit breaker) for comparison.

    python -m benchmarks.sick_instances [--healthy 200] [--sick 20] [--before]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from typing import Any

from benchmarks import common


def tenant(tid: str, service: str) -> dict[str, Any]:
    cfg: dict[str, Any] = {"tenantId": tid, "planVersion": 20, "deployUnitName": "green",
                           "serviceNames": [service]}  # fmt: skip
    if service == "blue-green-gateway":
        cfg["networkEndpoints"] = [{"key": "r1", "sourceIp": "10.0.0.1", "targetDomain": "g"}]
    return cfg


def healthy_done(server: common.Server, plan_id: str, healthy: int, timeout: float) -> float:
    """Wall clock at which the last healthy tenant's task ended (waits for all of them)."""
    ids = [f"{plan_id}-h{i:05d}" for i in range(healthy)]

    def ends() -> list[float] | None:
        pipe = server.r.pipeline(transaction=False)
        for tid in ids:
            pipe.hmget(f"deployer:task:{server.r.get(f'deployer:tenant:{tid}')}", "endedAt")
        got = [v[0] for v in pipe.execute()]
        return [int(v) / 1000 for v in got] if all(got) else None

    return max(common.wait_until(ends, timeout, 0.05))


def run(server: common.Server, name: str, healthy: int, sick: int) -> dict[str, Any]:
    plan_id = f"{name}-{uuid.uuid4().hex[:6]}"
    tenants = [tenant(f"{plan_id}-h{i:05d}", "blue-green-gateway") for i in range(healthy)]
    step = max(1, healthy // max(sick, 1))
    for j in range(sick):  # interleaved: sick tenants start among the healthy ones
        tenants.insert(j * (step + 1), tenant(f"{plan_id}-s{j:05d}", "ob-service"))
    t0 = time.time()
    common.submit({"planId": plan_id, "maxConcurrency": len(tenants), "tenants": tenants})
    done = healthy_done(server, plan_id, healthy, timeout=300)
    return {"healthy": healthy, "sick": sick, "healthy_done_s": round(done - t0, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--healthy", type=int, default=200)
    parser.add_argument("--sick", type=int, default=20)
    parser.add_argument("--before", action="store_true")
    args = parser.parse_args()
    extra = {"DEPLOYER_VERIFY_MAX_ATTEMPTS": "40"}
    if args.before:  # what a poll cost before: the full HTTP timeout, every time
        extra |= {
            "DEPLOYER_PROBE_TIMEOUT_SECONDS": "5",
            "DEPLOYER_PROBE_BREAKER_SECONDS": "0",
            "DEPLOYER_PROBE_PATIENCE_SECONDS": "5",
        }
    server = common.setup(**extra)

    from deployer.fleet import Behaviour, Fleet
    from deployer.settings import Settings

    s = Settings()
    instances = {"blue-green-gateway": ["127.0.0.1:0"] * 2, "ob-service": ["127.0.0.1:0"]}
    with Fleet(instances, server.url, s.key_prefix, s.pubsub_topic, s.verify_path) as fleet:
        (hung,) = fleet.addresses["ob-service"]
        fleet.behave_instance(hung, Behaviour(hang=True))
        os.environ["DEPLOYER_INSTANCES"] = json.dumps(fleet.addresses)
        with common.worker(app="tasks", concurrency=2, env=dict(os.environ)) as w:
            run(server, "warmup", 20, 0)
            alone = run(server, "alone", args.healthy, 0)
            common.emit("sick_instances.healthy_alone", **alone)
            mixed = run(server, "mixed", args.healthy, args.sick)
            common.emit("sick_instances.healthy_beside_hanging", before=args.before, **mixed,
                        hung_instance_requests=fleet.hits(hung), rss_mb=w.rss_mb())  # fmt: skip
    ratio = round(mixed["healthy_done_s"] / alone["healthy_done_s"], 2)
    common.emit("sick_instances.ratio", value=ratio, goal_le=1.2, met=ratio <= 1.2,
                before=args.before)  # fmt: skip


if __name__ == "__main__":
    main()
