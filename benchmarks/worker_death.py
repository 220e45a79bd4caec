"""A dead worker's tenants run again within 15 s of its death.

Two workers (prefork, 2 processes each) on one broker, the simulated fleet in this process.
For each kill a one-tenant plan starts; the tenant's instance hangs on the HealthCheck poll,
so a pool process is provably inside the stage. The process named by the task's `worker`
field (`{hostname}:{main pid}:{start id}/{pid}`) is then killed with SIGKILL — the worker's
main process (its pool is orphaned, as on an OOM kill of the parent) or the pool process
running the stage — the instance stops hanging, and the figure is the time from the kill to the
tenant's next STAGE_STARTED event. Every tenant must still complete exactly once.

    python -m benchmarks.worker_death [--kills 10] [--kinds main,child] [--heartbeat 5]

`--heartbeat 0` turns worker heartbeats off: the lease TTL (60 s) alone then finds a dead
main process's tenants (the figure before worker heartbeats).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
import uuid
from typing import Any

from benchmarks import common

NAMES = ("wdA", "wdB")


def tenant(tid: str) -> dict[str, Any]:
    return {
        "tenantId": tid,
        "planVersion": 20,
        "deployUnitName": "green",
        "networkEndpoints": [{"key": "r1", "sourceIp": "10.0.0.1", "targetDomain": "gw.g"}],
        "serviceNames": ["blue-green-gateway"],
    }


def events_after(
    server: common.Server, last: str, task_id: str
) -> tuple[str, list[dict[str, str]]]:
    out: list[dict[str, str]] = []
    for entry_id, fields in server.r.xrange("deployer:events", min=f"({last}", max="+"):
        last = entry_id
        if fields.get("taskId") == task_id:
            out.append(fields)
    return last, out


def one_kill(
    server: common.Server, fleet: Any, workers: dict[str, common.Worker], kind: str, i: int
) -> dict[str, Any]:
    from deployer.fleet import Behaviour
    from deployer.models import task_id_for

    plan_id = f"wd-{kind}-{i}-{uuid.uuid4().hex[:6]}"
    tid = f"{plan_id}-t"
    task_id = task_id_for(plan_id, tid)
    fleet.behave(tid, Behaviour(hang=True))
    common.submit({"planId": plan_id, "tenants": [tenant(tid)]})
    config = f"icc_ai_ops_srv:tenant_config:{tid}"
    # Written and broadcast: the poll (hanging) follows within milliseconds.
    common.wait_until(lambda: server.r.hget(config, "metadata"), 60)
    time.sleep(0.3)
    worker = server.r.hget(f"deployer:task:{task_id}", "worker") or ""
    node, _, child = worker.rpartition("/")
    main_pid = int(node.split(":")[-2])
    name = worker.split("@", 1)[0]
    last = server.r.xinfo_stream("deployer:events")["last-generated-id"]
    t_kill = time.time()
    os.kill(main_pid if kind == "main" else int(child), signal.SIGKILL)
    fleet.behave(tid, Behaviour())

    def restarted() -> float | None:
        nonlocal last
        last, evs = events_after(server, last, task_id)
        for e in evs:
            if e["type"] == "STAGE_STARTED":
                return int(e["ts"]) / 1000
        return None

    started = common.wait_until(restarted, 180, 0.02)
    common.wait_plan(server, plan_id, 120)
    completed = sum(
        1
        for _id, f in server.r.xrange("deployer:events", min="-", max="+")
        if f.get("taskId") == task_id and f["type"] == "TASK_COMPLETED"
    )
    if kind == "main":
        victim = workers[name]
        common._stop(victim.proc)  # the orphaned pool processes of the dead main process
        workers[name] = common.Worker(app="tasks", concurrency=2, name=name)
    return {"seconds": round(started - t_kill, 2), "completed": completed, "killed": name}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--kinds", default="main,child")
    parser.add_argument("--heartbeat", default="5")
    args = parser.parse_args()
    server = common.setup(DEPLOYER_WORKER_HEARTBEAT_SECONDS=args.heartbeat)

    from deployer.fleet import Fleet
    from deployer.settings import Settings

    s = Settings()
    instances = {"blue-green-gateway": ["127.0.0.1:0", "127.0.0.1:0"]}
    with Fleet(instances, server.url, s.key_prefix, s.pubsub_topic, s.verify_path) as fleet:
        os.environ["DEPLOYER_INSTANCES"] = json.dumps(fleet.addresses)
        workers = {n: common.Worker(app="tasks", concurrency=2, name=n) for n in NAMES}
        try:
            for kind in args.kinds.split(","):
                runs = [one_kill(server, fleet, workers, kind, i) for i in range(args.kills)]
                secs = [r["seconds"] for r in runs]
                common.emit(
                    f"worker_death.{kind}_kill", kills=len(runs), heartbeat_s=float(args.heartbeat),
                    p50_s=round(common.median(secs), 2), max_s=max(secs), runs=secs,
                    completed_once=all(r["completed"] == 1 for r in runs),
                )  # fmt: skip
        finally:
            for w in workers.values():
                w.stop()


if __name__ == "__main__":
    main()
