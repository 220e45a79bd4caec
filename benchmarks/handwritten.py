"""Deployer beside the same rollout written by hand with plain Celery.

The demo plan's 4 stages (ASBC POST, portal POST, blue-green-gateway write + publish +
HealthCheck of 2 instances, ob-service write + publish + check) for N tenants against the
simulated fleet with no delay (`deployer fleet --delay 0`), on one broker and one worker
(prefork, `-c 2`) that runs both: deployer's plan (all tenants in flight) and the same
stages as hand-written Celery chains (benchmarks/handwritten_tasks.py: same POST bodies, a
MULTI HSET of field + metadata, the same PUBLISH, GETs until each instance reports the
version, `self.retry(countdown=0.25)`; no lease, fencing, checkpoint or events). The
hand-written side's clock starts before it builds its bodies (deployer builds its stages
inside its measured time too). Goal: deployer <= 1.2x the hand-written wall time.

    python -m benchmarks.handwritten [--tenants 500,2000]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
import uuid
from typing import Any

from benchmarks import common
from benchmarks.growth import demo_tenant


def tenants(prefix: str, n: int) -> list[dict[str, Any]]:
    template = demo_tenant()
    out = []
    for i in range(n):
        t = copy.deepcopy(template)
        t["tenantId"] = t["sourceTenantDeployConfig"]["tenantId"] = f"{prefix}{i:06d}"
        out.append(t)
    return out


def hand_args(config: dict[str, Any], instances: dict[str, list[str]]) -> dict[str, Any]:
    """The bodies and checks of the tenant's stages, as the stage factory builds them."""
    from deployer.models import TenantConfig
    from deployer.planner import forward_stages
    from deployer.settings import Settings
    from stages.steps.key_value_write import compact

    s = Settings()
    tc = TenantConfig.model_validate(config)
    out: dict[str, Any] = {}
    for stage in forward_stages(tc, s):
        for step in stage.steps:
            p = step.params
            if step.type == "http-request":
                out[stage.name] = {
                    "instances": instances[p["service"]], "path": p["path"],
                    "headers": p["headers"], "body": p["body"],
                    "timestampField": p.get("timestampField"),
                    "expectJson": p.get("expectJson", {}),
                }  # fmt: skip
            elif step.type in ("key-value-write", "redis-ack"):
                service = p.get("service") or "blue-green-gateway"
                out[stage.name] = {
                    "field": p["field"], "value": compact(p["value"]),
                    "metadata": compact({"version": tc.plan_version}),
                    "appName": p.get("appName") or p["field"],
                    "instances": instances[service],
                    "verifyPath": s.verify_path.replace("{tenantId}", tc.tenant_id),
                }  # fmt: skip
    return {"tenantId": tc.tenant_id, "version": tc.plan_version, "stages": out}


def run_hand(server: common.Server, prefix: str, n: int, instances: dict[str, list[str]]) -> float:
    from celery import chain

    from benchmarks.apps import deployer as app
    from benchmarks.handwritten_tasks import done, post, write_verify

    server.r.delete("bench:hand:done")
    t0 = time.time()
    with app.producer_or_acquire() as producer:
        for config in tenants(prefix, n):
            t = hand_args(config, instances)
            order = list(t["stages"])  # asbc-gateway, portal, blue-green-gateway, ob-service
            sigs = []
            for i, name in enumerate(order):
                task = post if "body" in t["stages"][name] else write_verify
                sigs.append(task.s(t, name) if i == 0 else task.s(name))
            chain(*sigs, done.s()).apply_async(producer=producer)
    common.wait_until(lambda: server.r.llen("bench:hand:done") >= n, 600, 0.02)
    last = max(float(x) for x in server.r.lrange("bench:hand:done", 0, -1))
    return last - t0


def run_deployer(server: common.Server, prefix: str, n: int) -> float:
    plan_id = f"{prefix}-{uuid.uuid4().hex[:6]}"
    t0 = time.time()
    common.submit({"planId": plan_id, "maxConcurrency": n, "tenants": tenants(prefix, n)})
    common.wait_plan(server, plan_id, 600, 0.02)
    return max(common.task_end_times(server, plan_id)) - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", default="500,2000")
    args = parser.parse_args()
    server = common.setup(DEPLOYER_FLEET_DELAY_SECONDS="0")

    from deployer.fleet import Behaviour, Fleet
    from deployer.settings import DEFAULT_INSTANCES, Settings

    s = Settings()
    free = {svc: ["127.0.0.1:0"] * len(addrs) for svc, addrs in DEFAULT_INSTANCES.items()}
    with Fleet(free, server.url, s.key_prefix, s.pubsub_topic, s.verify_path, Behaviour()) as f:
        os.environ["DEPLOYER_INSTANCES"] = json.dumps(f.addresses)
        with common.worker(concurrency=2, env=dict(os.environ)):
            run_deployer(server, "warm-d", 20)
            run_hand(server, "warm-h", 20, f.addresses)
            for n in (int(x) for x in args.tenants.split(",")):
                tag = uuid.uuid4().hex[:4]
                wall_d = run_deployer(server, f"d{tag}-", n)
                wall_h = run_hand(server, f"h{tag}-", n, f.addresses)
                common.emit(
                    "handwritten.demo_plan", tenants=n, deployer_s=round(wall_d, 2),
                    handwritten_s=round(wall_h, 2), ratio=round(wall_d / wall_h, 2),
                    goal_le=1.2, met=wall_d / wall_h <= 1.2,
                )  # fmt: skip


if __name__ == "__main__":
    main()
