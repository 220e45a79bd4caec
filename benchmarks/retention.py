"""Retention through the archive: Redis memory over many plans on the same tenants, archive
rows and bytes per tenant-task, archive throughput, the longest Redis call while archiving,
and `history --tenant` with every plan archived.

    python -m benchmarks.retention [--plans 50] [--tenants 2000] [--archive-url URL]

Each plan is written by the store's create path (the demo plan's tenant config) and its tasks
are ended by the prelude's own change_status, each with what a finished real task holds
(benchmarks/growth.py: `run` ≈ 2,093 B of stage specs, `ctx` ≈ 299 B, 10 events: TASK_RUNNING,
4 × STAGE_STARTED/COMPLETED, TASK_COMPLETED): running 100,000 tenants through workers would
measure the workers, not retention. Then one retention pass (deployer/retention.py, the
workers' own code) archives every finished plan. Redis `used_memory` is read after each pass;
the longest call is timed on the client (each script or pipeline of the pass) and on the
server (SLOWLOG, every command over 1 ms). The archive is an SQLite file unless
--archive-url names another database.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks import common

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo-plan.json"
END = """
local now = tonumber(ARGV[4])
change_status(KEYS[1], KEYS[2], 'RUNNING', now - 9)
redis.call('HSET', KEYS[1], 'run', ARGV[5], 'ctx', ARGV[6], 'startedAt', now - 9, 'endedAt', now,
  'runKind', 'FORWARD', 'runId', ARGV[2], 'checkpoint', 3, 'stageIndex', 3,
  'cursor', 'tok:3:0:1', 'worker', 'bench@host/1')
local base = {'planId', ARGV[1], 'taskId', ARGV[2], 'tenantId', ARGV[3]}
local function ev(kind, stage)
  local f = {'type', kind, unpack(base)}
  if stage then f[#f + 1] = 'stage'; f[#f + 1] = stage end
  f[#f + 1] = 'ts'; f[#f + 1] = now
  emit('deployer:events', 100000, f)
end
ev('TASK_RUNNING')
for _, s in ipairs({'asbc-gateway', 'portal', 'blue-green-gateway', 'ob-service'}) do
  ev('STAGE_STARTED', s); ev('STAGE_COMPLETED', s)
end
change_status(KEYS[1], KEYS[2], 'COMPLETED', now)
ev('TASK_COMPLETED')
return 1
"""


def tenant_config(tenant_id: str, version: int) -> str:
    t = json.loads(DEMO.read_text())["tenants"][0]
    t.pop("planId", None)
    t["tenantId"] = t["sourceTenantDeployConfig"]["tenantId"] = tenant_id
    t["planVersion"] = version
    return json.dumps(t, separators=(",", ":"))


def finished_plan(server: Any, store: Any, script: Any, tenants: list[str], version: int) -> str:
    from deployer.models import task_id_for
    from deployer.state import keys
    from deployer.state.store import TaskRow

    plan_id = f"ret-{version:03d}-{uuid.uuid4().hex[:6]}"
    rows = [TaskRow(t, 4, tenant_config(t, version)) for t in tenants]
    assert store.create_plan(plan_id, rows, 10, f"{plan_id}-")
    run = json.dumps({"stages": [{"name": f"stage-{i}", "steps": "x" * 480} for i in range(4)]})
    ctx = json.dumps({"planId": plan_id, "pad": "y" * 220})
    now = int(time.time() * 1000)
    for start in range(0, len(tenants), 500):
        pipe = server.r.pipeline(transaction=False)
        for t in tenants[start : start + 500]:
            task_id = task_id_for(plan_id, t)
            script(keys=[keys.task(task_id), keys.plan(plan_id)],
                   args=[plan_id, task_id, t, now, run, ctx], client=pipe)  # fmt: skip
        pipe.execute()
    assert server.r.hget(keys.plan(plan_id), "status") == "COMPLETED"
    return plan_id


def db_bytes(url: str) -> int | None:
    if url.startswith("sqlite:///"):
        path = Path(url.split("///", 1)[1])
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plans", type=int, default=50)
    ap.add_argument("--tenants", type=int, default=2000)
    ap.add_argument("--archive-url", default="")
    ap.add_argument("--history-samples", type=int, default=200)
    args = ap.parse_args()
    server = common.setup()
    url = args.archive_url or f"sqlite:///{common._tmp / 'archive.sqlite3'}"
    os.environ["DEPLOYER_ARCHIVE_URL"] = url
    from importlib import resources

    from deployer.archive.views import tenant_history
    from deployer.retention import PassReport, Retention
    from deployer.settings import get_settings
    from deployer.state.store import Store

    get_settings.cache_clear()
    s = get_settings()
    store = Store(server.r, s)
    prelude = resources.files("deployer.state").joinpath("lua/_prelude.lua").read_text()
    script = server.r.register_script(prelude + END)
    retention = Retention(server.r, s)
    tenants = [f"tenant-{i:06d}" for i in range(args.tenants)]
    server.r.config_set("slowlog-log-slower-than", 1000)
    slow: list[dict[str, Any]] = []
    memory: list[int] = []
    archive_s = 0.0
    total = PassReport()
    for n in range(1, args.plans + 1):
        finished_plan(server, store, script, tenants, n)
        server.r.slowlog_reset()  # only the pass's own commands are looked at
        t0 = time.perf_counter()
        report = retention.run_pass(older_than=0)
        archive_s += time.perf_counter() - t0
        slow += server.r.slowlog_get(128)
        total.tasks_archived += report.tasks_archived
        total.events_archived += report.events_archived
        total.tasks_removed += report.tasks_removed
        total.longest_slice = max(total.longest_slice, report.longest_slice)
        memory.append(int(server.r.info("memory")["used_memory"]))
        common.emit("retention_pass", plan=n, used_memory_mb=round(memory[-1] / 1e6, 2),
                    archived_tasks=report.tasks_archived, removed=report.tasks_removed,
                    kept=report.tasks_kept, seconds=round(time.perf_counter() - t0, 2))  # fmt: skip
    longest_server = max((e["duration"] for e in slow), default=0)
    worst = max(slow, key=lambda e: e["duration"], default=None)
    counts = retention.archive.counts()
    size = db_bytes(url)
    task_tasks = args.plans * args.tenants
    common.emit(
        "redis_plateau",
        after_1_mb=round(memory[0] / 1e6, 2),
        after_2_mb=round(memory[min(1, len(memory) - 1)] / 1e6, 2),
        after_last_mb=round(memory[-1] / 1e6, 2),
        max_mb=round(max(memory) / 1e6, 2),
        plans=args.plans,
        tenants=args.tenants,
    )
    common.emit(
        "archive_size",
        rows=counts,
        rows_per_tenant_task=round(sum(counts.values()) / task_tasks, 2),
        bytes=size,
        bytes_per_tenant_task=round(size / task_tasks, 1) if size else None,
        url=url.split("://", 1)[0],
    )
    common.emit(
        "archive_throughput",
        tenant_tasks=total.tasks_archived,
        events=total.events_archived,
        seconds=round(archive_s, 2),
        tenant_tasks_per_s=round(total.tasks_archived / archive_s, 1),
    )
    common.emit(
        "longest_redis_call",
        client_ms=round(total.longest_slice * 1000, 2),
        server_slowlog_max_ms=round(longest_server / 1000, 2),
        server_command=" ".join(str(a) for a in (worst["command"].split()[:2] if worst else [])),
        slice_tasks=s.retention_slice,
    )
    samples: list[float] = []
    for i in range(args.history_samples):
        tenant = tenants[(i * 7919) % len(tenants)]
        t0 = time.perf_counter()
        page = tenant_history(store, retention.archive, tenant, 50)
        samples.append(time.perf_counter() - t0)
        assert len(page["items"]) == min(args.plans, 50), len(page["items"])
    cli: list[float] = []
    env = {**os.environ}
    deployer = str(Path(sys.executable).parent / "deployer")
    for i in range(5):
        t0 = time.perf_counter()
        argv = [deployer, "history", "--tenant", tenants[i], "--json"]
        subprocess.run(argv, check=True, capture_output=True, env=env)
        cli.append(time.perf_counter() - t0)
    common.emit(
        "history_tenant",
        archived_tasks=counts["tasks"],
        p50_ms=round(common.median(samples) * 1000, 2),
        p95_ms=round(common.pct(samples, 0.95) * 1000, 2),
        cli_process_p50_ms=round(common.median(cli) * 1000, 1),
    )


if __name__ == "__main__":
    main()
