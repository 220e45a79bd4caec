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

    python -m benchmarks.handwritten [--tenants 500,2000] [--pairs 1]

Wall time on a shared 2-core machine is noisy, so each run also reports what it cost: CPU
seconds of the worker (main process + pool, from /proc) and of redis-server (INFO cpu), the
Redis commands it sent (INFO commandstats) and the instance polls the fleet answered, per
tenant. `--pairs N` runs N interleaved pairs (deployer first, then hand-written first, ...);
the load average is printed beside every figure.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
import uuid
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
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


@lru_cache(maxsize=1)
def _settings() -> Any:
    """Read once: a hand-written rollout would not rebuild its settings per tenant (1.6 ms
    each, in the process that also serves the simulated fleet)."""
    from deployer.settings import Settings

    return Settings()


def hand_args(config: dict[str, Any], instances: dict[str, list[str]]) -> dict[str, Any]:
    """The bodies and checks of the tenant's stages, as the stage factory builds them."""
    from deployer.models import TenantConfig
    from deployer.planner import forward_stages
    from stages.steps.key_value_write import compact

    s = _settings()
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
    from benchmarks.handwritten_tasks import post, write_verify

    server.r.delete("bench:hand:done")
    t0 = time.time()
    with app.producer_or_acquire() as producer:
        for config in tenants(prefix, n):
            t = hand_args(config, instances)
            order = list(t["stages"])  # asbc-gateway, portal, blue-green-gateway, ob-service
            assert "body" not in t["stages"][order[-1]], "the last stage records the end"
            sigs = []
            for i, name in enumerate(order):
                task = post if "body" in t["stages"][name] else write_verify
                sigs.append(task.s(t, name) if i == 0 else task.s(name))
            chain(*sigs).apply_async(producer=producer)
    common.wait_until(lambda: server.r.llen("bench:hand:done") >= n, 600, 0.02)
    last = max(float(x) for x in server.r.lrange("bench:hand:done", 0, -1))
    return last - t0


def run_deployer(server: common.Server, prefix: str, n: int) -> float:
    plan_id = f"{prefix}-{uuid.uuid4().hex[:6]}"
    t0 = time.time()
    common.submit({"planId": plan_id, "maxConcurrency": n, "tenants": tenants(prefix, n)})
    common.wait_plan(server, plan_id, 600, 0.02)
    return max(common.task_end_times(server, plan_id)) - t0


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (the worker's main process and its pool)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _TICK


def redis_cpu(server: common.Server) -> float:
    info = server.r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measured(
    server: common.Server,
    w: common.Worker,
    polls: Callable[[], int],
    n: int,
    run: Callable[[], float],
) -> dict[str, Any]:
    """Wall time of `run` and what it cost per tenant: worker and Redis CPU, commands, polls."""
    main, pool = [w.proc.pid], w.children()
    load = os.getloadavg()[0]
    cpu0, main0, rcpu0 = cpu_seconds(main + pool), cpu_seconds(main), redis_cpu(server)
    cmd0, polls0 = server.commandstats(), polls()
    wall = run()
    cpu1, main1, rcpu1 = cpu_seconds(main + pool), cpu_seconds(main), redis_cpu(server)
    cmd1, polls1 = server.commandstats(), polls()
    commands = {k: v - cmd0.get(k, 0) for k, v in cmd1.items() if v - cmd0.get(k, 0) > 0}
    commands.pop("info", None)
    return {
        "wall_s": round(wall, 2),
        "worker_cpu_ms_per_tenant": round((cpu1 - cpu0) * 1000 / n, 2),
        "of_which_main_process_ms": round((main1 - main0) * 1000 / n, 2),
        "redis_cpu_ms_per_tenant": round((rcpu1 - rcpu0) * 1000 / n, 2),
        "redis_commands_per_tenant": round(sum(commands.values()) / n, 1),
        "commands": {k: round(v / n, 2) for k, v in sorted(commands.items(), key=lambda c: -c[1])},
        "polls_per_tenant": round((polls1 - polls0) / n, 2),
        "load_avg": round(load, 2),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", default="500,2000")
    parser.add_argument("--pairs", type=int, default=1)
    args = parser.parse_args()
    server = common.setup(DEPLOYER_FLEET_DELAY_SECONDS="0")

    from deployer.fleet import Behaviour, Fleet
    from deployer.settings import DEFAULT_INSTANCES, Settings

    s = Settings()
    free = {svc: ["127.0.0.1:0"] * len(addrs) for svc, addrs in DEFAULT_INSTANCES.items()}
    with Fleet(free, server.url, s.key_prefix, s.pubsub_topic, s.verify_path, Behaviour()) as f:
        os.environ["DEPLOYER_INSTANCES"] = json.dumps(f.addresses)
        with common.worker(concurrency=2, env=dict(os.environ)) as w:
            run_deployer(server, "warm-d", 20)
            run_hand(server, "warm-h", 20, f.addresses)

            def polls() -> int:
                return f.stats()["polls"]

            for n in (int(x) for x in args.tenants.split(",")):
                for pair in range(args.pairs):
                    tag = uuid.uuid4().hex[:4]
                    sides: dict[str, Callable[[], float]] = {
                        "deployer": lambda tag=tag, n=n: run_deployer(server, f"d{tag}-", n),
                        "handwritten": lambda tag=tag, n=n: run_hand(
                            server, f"h{tag}-", n, f.addresses
                        ),
                    }
                    order = ["deployer", "handwritten"][:: 1 if pair % 2 == 0 else -1]
                    got = {side: measured(server, w, polls, n, sides[side]) for side in order}
                    d, h = got["deployer"], got["handwritten"]
                    common.emit(
                        "handwritten.demo_plan", tenants=n, pair=pair, first=order[0],
                        deployer_s=d["wall_s"], handwritten_s=h["wall_s"],
                        ratio=round(d["wall_s"] / h["wall_s"], 2), goal_le=1.2,
                        met=d["wall_s"] / h["wall_s"] <= 1.2,
                        cpu_ratio=round(
                            d["worker_cpu_ms_per_tenant"] / h["worker_cpu_ms_per_tenant"], 2
                        ),
                        deployer=d, handwritten=h,
                    )  # fmt: skip


if __name__ == "__main__":
    main()
