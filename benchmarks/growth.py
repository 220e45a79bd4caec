"""What Redis holds per tenant-task, per plan, and at 1,000,000 tenants.

Two measurements on a private redis-server, from which the projection is computed:

1. Plans of 1,000 / 10,000 / 100,000 tenants (the demo plan's tenant, 4 stages) are created
   through the store exactly as `submit_plan` writes them (no worker): `INFO memory`
   `used_memory` before and after, and `MEMORY USAGE` of each kind of key a task adds (task
   hash, tenant pointer, its entry in the plan's tenant list and queue). The slope between
   the plan sizes is the cost of one more submitted tenant.
2. A small plan of the same tenants runs through a real worker against the simulated fleet:
   `MEMORY USAGE` of a finished task hash (its run, context and checkpoint added), the lease
   epoch, and the events stream's bytes and entries per tenant and per stage.

    python -m benchmarks.growth [--sizes 1000,10000,100000] [--run 50]

The events stream is bounded (`DEPLOYER_EVENTS_MAXLEN`, 100,000 entries): past that it costs
a constant, whatever the number of tenants. Nothing else is trimmed: task hashes, tenant
pointers and lease epochs stay until an operator deletes them.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from benchmarks import common

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo-plan.json"


def demo_tenant() -> dict[str, Any]:
    t = json.loads(DEMO.read_text())["tenants"][0]
    t.pop("planId", None)
    return t


def tenants(prefix: str, n: int) -> list[dict[str, Any]]:
    template = demo_tenant()
    out = []
    for i in range(n):
        t = copy.deepcopy(template)
        t["tenantId"] = t["sourceTenantDeployConfig"]["tenantId"] = f"{prefix}{i:07d}"
        out.append(t)
    return out


def used(server: common.Server) -> int:
    return int(server.r.info("memory")["used_memory"])


def usage(server: common.Server, key: str) -> int:
    return int(server.r.memory_usage(key, samples=0) or 0)


def create(server: common.Server, n: int) -> dict[str, Any]:
    """Create one plan of n tenants through the store; bytes in total and per key kind."""
    from deployer.intake import task_row, validate_plan
    from deployer.models import task_id_for
    from deployer.settings import Settings
    from deployer.state import keys
    from deployer.state.store import Store

    s = Settings()
    # One script writes the whole plan: 100,000 tenants outlast redis-py's 5 s default.
    store = Store(redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=300), s)
    plan_id = f"g{n}-{uuid.uuid4().hex[:6]}"
    head, rows = validate_plan(
        {"planId": plan_id, "maxConcurrency": 10, "tenants": tenants(f"{plan_id}-t", n)},
        s,
        lambda c: task_row(c, s),
    )
    before = used(server)
    t0 = time.monotonic()
    assert store.create_plan(head.plan_id, rows, 10, uuid.uuid4().hex[:8])
    took = time.monotonic() - t0
    total = used(server) - before
    tid = f"{plan_id}-t{0:07d}"
    return {
        "tenants": n,
        "used_memory_delta_bytes": total,
        "per_tenant_bytes": round(total / n, 1),
        "task_hash_bytes": usage(server, keys.task(task_id_for(plan_id, tid))),
        "tenant_pointer_bytes": usage(server, keys.tenant(tid)),
        "plan_list_bytes_per_tenant": round(usage(server, keys.plan_tenants(plan_id)) / n, 1),
        "plan_queue_bytes_per_tenant": round(usage(server, keys.plan_queue(plan_id)) / n, 1),
        "plan_hash_bytes": usage(server, keys.plan(plan_id)),
        "create_s": round(took, 2),
    }


def run_small(server: common.Server, n: int) -> dict[str, Any]:
    """Run n demo tenants through a real worker; what a finished tenant-task holds."""
    from deployer.models import task_id_for
    from deployer.state import keys
    from deployer.state.record import Field
    from deployer.state.store import read_tasks
    from deployer.state.targets import config_hash

    plan_id = f"grun-{uuid.uuid4().hex[:6]}"
    prefix = f"{plan_id}-t"
    events_before = usage(server, keys.EVENTS)
    xlen_before = server.r.xlen(keys.EVENTS)
    common.submit({"planId": plan_id, "maxConcurrency": n, "tenants": tenants(prefix, n)})
    common.wait_plan(server, plan_id, 300, 0.05)
    entries = server.r.xlen(keys.EVENTS) - xlen_before
    events_bytes = usage(server, keys.EVENTS) - events_before
    ids = [task_id_for(plan_id, f"{prefix}{i:07d}") for i in range(n)]
    hashes = [usage(server, keys.task(t)) for t in ids]
    # (it read a field "stageCount" the task hash never had, so it always said 4)
    stages = read_tasks(server.r, ids[:1], [Field.TOTAL_STAGES])[0].total_stages or 4
    tid = f"{prefix}{0:07d}"
    fields = server.r.hkeys(keys.task(ids[0]))
    pipe = server.r.pipeline(transaction=False)
    for name in fields:
        pipe.hstrlen(keys.task(ids[0]), name)
    largest = sorted(zip(fields, pipe.execute(), strict=True), key=lambda kv: -kv[1])[:5]
    return {
        "tenants": n,
        "stages": stages,
        "largest_fields": dict(largest),
        "task_hash_done_bytes": round(sum(hashes) / n, 1),
        "tenant_pointer_bytes": usage(server, keys.tenant(tid)),
        "lease_epoch_bytes": usage(server, keys.lease_epoch(tid)),
        "lease_bytes_after": usage(server, keys.lease(tid)),
        "event_entries_per_tenant": round(entries / n, 2),
        "event_bytes_per_entry": round(events_bytes / max(entries, 1), 1),
        "event_bytes_per_tenant": round(events_bytes / n, 1),
        "config_hash_bytes": usage(server, config_hash("icc_ai_ops_srv:tenant_config:", tid)),
    }


def project(created: list[dict[str, Any]], ran: dict[str, Any], maxlen: int) -> dict[str, Any]:
    """Linear slope of used_memory over plan sizes, plus what running adds per task."""
    xs = [c["tenants"] for c in created]
    ys = [c["used_memory_delta_bytes"] for c in created]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / max(
        sum((x - mx) ** 2 for x in xs), 1
    )
    big = max(created, key=lambda c: c["tenants"])
    grown = ran["task_hash_done_bytes"] - big["task_hash_bytes"]  # run + ctx + checkpoint
    per_done = slope + grown + ran["lease_epoch_bytes"]
    events_cap = ran["event_bytes_per_entry"] * maxlen
    plan_100k_done = 100_000 * per_done
    million = 1_000_000 * per_done
    return {
        "submitted_bytes_per_tenant_task": round(slope, 1),
        "finished_bytes_per_tenant_task": round(per_done, 1),
        "plan_100k_submitted_mb": round(100_000 * slope / 2**20, 1),
        "plan_100k_finished_mb": round(plan_100k_done / 2**20, 1),
        "events_stream_cap_mb": round(events_cap / 2**20, 1),
        "tenants_1m_finished_mb": round(million / 2**20, 1),
        "tenants_1m_total_mb_with_events_cap": round((million + events_cap) / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--run", type=int, default=50)
    args = parser.parse_args()
    server = common.setup(DEPLOYER_FLEET_DELAY_SECONDS="0")

    created = []
    for n in (int(x) for x in args.sizes.split(",")):
        figure = create(server, n)
        created.append(figure)
        common.emit("growth.created_plan", **figure)

    from deployer.fleet import Behaviour, Fleet
    from deployer.settings import DEFAULT_INSTANCES, Settings

    s = Settings()
    free = {svc: ["127.0.0.1:0"] * len(addrs) for svc, addrs in DEFAULT_INSTANCES.items()}
    with Fleet(free, server.url, s.key_prefix, s.pubsub_topic, s.verify_path, Behaviour()) as f:
        os.environ["DEPLOYER_INSTANCES"] = json.dumps(f.addresses)
        with common.worker(app="tasks", concurrency=2, env=dict(os.environ)):
            ran = run_small(server, args.run)
    common.emit("growth.finished_tenant_task", **ran)
    common.emit("growth.projection", **project(created, ran, s.events_maxlen))


if __name__ == "__main__":
    main()
