"""Deployer beside the same rollout written by hand with plain Celery, as a user would run it.

The demo plan's 4 stages (ASBC POST, portal POST, blue-green-gateway write + publish +
HealthCheck of 2 instances, ob-service write + publish + check) for N tenants against the
simulated fleet with no delay, **served in its own process** (benchmarks/fleet_process.py),
all on one Redis (broker and state; `INFO commandstats` counts both sides). Four sides per
round, their order rotated round after round (deployer, hand-written, ..., then starting one
later), each a fresh set of tenants:

- `deployer`: deployer's own worker as operators run it (`benchmarks.apps.deployer`, prefork
  `-c 2`, task events on), the plan submitted with every tenant in flight;
- `hand_events`: the same stages by hand (benchmarks/handwritten_rollout.py: same POST
  bodies, a MULTI HSET of field + metadata, the same PUBLISH, GETs until each instance
  reports the version, `self.retry(countdown=0.25)`; no lease, fencing, checkpoint or
  events) as **their own plain Celery app and worker** (benchmarks/handwritten_app.py,
  Celery's defaults, `-c 2`, task events on with `-E`): the goal's baseline;
- `hand_quiet`: that plain worker with task events off (no `-E`);
- `hand_on_deployer`: the same tasks registered on deployer's worker (the older figure:
  behind the message guard and guarded transport, beside the maintenance threads).

The hand-written client sends its chains from this process, its clock starting before it
builds its bodies (deployer builds its stages inside its measured time too). Goal (issue
24): deployer <= 1.1x `hand_events` and <= 1.5x `hand_quiet`.

    python -m benchmarks.handwritten [--tenants 500,2000] [--rounds 2]

Wall time on a shared 2-core machine is noisy, so each side also reports what it cost per
tenant: CPU seconds of its worker (main process + pool children, user + sys, from /proc),
of redis-server (INFO cpu), the Redis commands run while it ran (INFO commandstats, commands
inside scripts included; the idle workers' BRPOPs too, a few per second) and the instance
polls the fleet answered; the 1-minute load average is printed beside every figure.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
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


def run_hand(
    server: common.Server, prefix: str, n: int, instances: dict[str, list[str]], plain: str | None
) -> tuple[float, float]:
    """The hand-written chains, sent on the plain app to queue `plain`, or (None) on
    deployer's app to its stages queue."""
    from celery import chain

    from benchmarks.handwritten_rollout import DONE

    if plain is None:
        from benchmarks.apps import deployer as app
        from benchmarks.handwritten_tasks import post, write_verify
        from celeryconfig import STAGES_QUEUE as queue
    else:
        from benchmarks.handwritten_app import app, post, write_verify

        queue = plain
    server.r.delete(DONE)
    t0, cpu0 = time.time(), time.process_time()
    with app.producer_or_acquire() as producer:
        for config in tenants(prefix, n):
            t = hand_args(config, instances)
            order = list(t["stages"])  # asbc-gateway, portal, blue-green-gateway, ob-service
            assert "body" not in t["stages"][order[-1]], "the last stage records the end"
            sigs = []
            for i, name in enumerate(order):
                task = post if "body" in t["stages"][name] else write_verify
                sig = task.s(t, name) if i == 0 else task.s(name)
                sigs.append(sig.set(queue=queue))
            chain(*sigs).apply_async(producer=producer)
    producer_cpu = time.process_time() - cpu0
    common.wait_until(lambda: server.r.llen(DONE) >= n, 600, 0.02)
    last = max(float(x) for x in server.r.lrange(DONE, 0, -1))
    return last - t0, producer_cpu


def run_deployer(server: common.Server, prefix: str, n: int) -> tuple[float, float]:
    plan_id = f"{prefix}-{uuid.uuid4().hex[:6]}"
    t0, cpu0 = time.time(), time.process_time()
    common.submit({"planId": plan_id, "maxConcurrency": n, "tenants": tenants(prefix, n)})
    producer_cpu = time.process_time() - cpu0
    common.wait_plan(server, plan_id, 600, 0.02)
    return max(common.task_end_times(server, plan_id)) - t0, producer_cpu


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
    run: Callable[[], tuple[float, float]],
) -> dict[str, Any]:
    """Wall time of `run` and what it cost per tenant: worker and Redis CPU, commands, polls,
    and the CPU of the producer (this process) building and sending the work: the hand-written
    chains are built and sent here, deployer's are built and sent by its worker from one
    `submit_plan` message (so they are in its worker CPU)."""
    main, pool = [w.proc.pid], w.children()
    load = os.getloadavg()[0]
    cpu0, main0, rcpu0 = cpu_seconds(main + pool), cpu_seconds(main), redis_cpu(server)
    cmd0, polls0 = server.commandstats(), polls()
    wall, producer_cpu = run()
    cpu1, main1, rcpu1 = cpu_seconds(main + pool), cpu_seconds(main), redis_cpu(server)
    cmd1, polls1 = server.commandstats(), polls()
    commands = {k: v - cmd0.get(k, 0) for k, v in cmd1.items() if v - cmd0.get(k, 0) > 0}
    commands.pop("info", None)
    return {
        "wall_s": round(wall, 2),
        "worker_cpu_ms_per_tenant": round((cpu1 - cpu0) * 1000 / n, 2),
        "of_which_main_process_ms": round((main1 - main0) * 1000 / n, 2),
        "redis_cpu_ms_per_tenant": round((rcpu1 - rcpu0) * 1000 / n, 2),
        "producer_cpu_ms_per_tenant": round(producer_cpu * 1000 / n, 2),
        "redis_commands_per_tenant": round(sum(commands.values()) / n, 1),
        "commands": {k: round(v / n, 2) for k, v in sorted(commands.items(), key=lambda c: -c[1])},
        "polls_per_tenant": round((polls1 - polls0) / n, 2),
        "load_avg": round(load, 2),
    }  # fmt: skip


class FleetProcess:
    """The simulated fleet in its own process (benchmarks/fleet_process.py)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fleet_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=common.ROOT,
            env=dict(os.environ),
            start_new_session=True,
        )
        common._procs.append(self.proc)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self._in, self._out = self.proc.stdin, self.proc.stdout
        self.addresses: dict[str, list[str]] = json.loads(self._out.readline())

    def polls(self) -> int:
        self._in.write(b"stats\n")
        self._in.flush()
        return int(json.loads(self._out.readline())["polls"])


#: The sides of a round, in the order of the first round (later rounds start one later).
SIDES = ("deployer", "hand_events", "hand_quiet", "hand_on_deployer")
PLAIN_QUEUES = {"hand_events": "hand-events", "hand_quiet": "hand-quiet"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", default="500,2000")
    parser.add_argument("--rounds", "--pairs", type=int, default=2)
    parser.add_argument("--sides", default=",".join(SIDES))
    args = parser.parse_args()
    server = common.setup(DEPLOYER_FLEET_DELAY_SECONDS="0")
    sides_run = [s for s in SIDES if s in args.sides.split(",")]

    fleet = FleetProcess()
    os.environ["DEPLOYER_INSTANCES"] = json.dumps(fleet.addresses)
    env = dict(os.environ)
    # deployer's worker as shipped: no `task-sent` events (DEPLOYER_TASK_SENT_EVENTS is off by
    # default; benchmarks.apps turns them on for its raw-vs-deployer figures), like the plain
    # worker, whose `-E` turns on worker events only
    deployer_env = {**env, "BENCH_SENT_EVENTS": "0"}
    with (
        common.worker(concurrency=2, env=deployer_env) as dw,
        common.worker(app="benchmarks.handwritten_app", concurrency=2, env=env,
                      queues=PLAIN_QUEUES["hand_events"], name="hand-events",
                      extra=("-E",)) as ew,
        common.worker(app="benchmarks.handwritten_app", concurrency=2, env=env,
                      queues=PLAIN_QUEUES["hand_quiet"], name="hand-quiet") as qw,
    ):  # fmt: skip
        workers = {"deployer": dw, "hand_events": ew, "hand_quiet": qw, "hand_on_deployer": dw}

        def runner(side: str, prefix: str, n: int) -> Callable[[], tuple[float, float]]:
            if side == "deployer":
                return lambda: run_deployer(server, prefix, n)
            plain = PLAIN_QUEUES.get(side)
            return lambda: run_hand(server, prefix, n, fleet.addresses, plain)

        for side in sides_run:  # warm every worker (imports, connections, the pool)
            runner(side, f"warm-{side[:6]}-", 20)()

        summary: dict[int, dict[str, list[float]]] = {}
        for n in (int(x) for x in args.tenants.split(",")):
            for rnd in range(args.rounds):
                tag = uuid.uuid4().hex[:4]
                shift = rnd % len(sides_run)
                order = sides_run[shift:] + sides_run[:shift]
                got = {
                    side: measured(
                        server, workers[side], fleet.polls, n,
                        runner(side, f"{side[:1]}{side[-3:]}{tag}-", n),
                    )
                    for side in order
                }  # fmt: skip
                d = got.get("deployer")
                ratios: dict[str, Any] = {}
                for side, h in got.items():
                    if d is None or side == "deployer":
                        continue
                    ratios[side] = {
                        "wall": round(d["wall_s"] / h["wall_s"], 2),
                        "worker_cpu": round(
                            d["worker_cpu_ms_per_tenant"] / h["worker_cpu_ms_per_tenant"], 2
                        ),
                        "redis_commands": round(
                            d["redis_commands_per_tenant"] / h["redis_commands_per_tenant"], 2
                        ),
                        # the whole rollout's CPU: its worker's, plus what built and sent it
                        "worker_and_producer_cpu": round(
                            (d["worker_cpu_ms_per_tenant"] + d["producer_cpu_ms_per_tenant"])
                            / (h["worker_cpu_ms_per_tenant"] + h["producer_cpu_ms_per_tenant"]),
                            2,
                        ),
                    }
                    for k, v in ratios[side].items():
                        summary.setdefault(n, {}).setdefault(f"{side}.{k}", []).append(v)
                common.emit(
                    "handwritten.demo_plan", tenants=n, round=rnd, order=order,
                    goal={"hand_events": 1.1, "hand_quiet": 1.5}, ratios=ratios,
                    **{side: got[side] for side in sides_run},
                )  # fmt: skip
        for n, ratios_of in summary.items():
            common.emit(
                "handwritten.summary", tenants=n, rounds=args.rounds,
                median={k: round(common.median(v), 2) for k, v in ratios_of.items()},
                runs={k: v for k, v in ratios_of.items()},
            )  # fmt: skip


if __name__ == "__main__":
    main()
