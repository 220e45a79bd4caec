"""Figures for the on-call surfaces: how long a CLI command takes from the shell, and how
long a Prometheus scrape takes with 200 plans of 500 tenants in Redis.

- `cli.*`: wall time (and the child's CPU time) of `deployer --help`, `deployer status P`
  (table and `--json`), `deployer task --tenant T` and `python -c "import deployer.cli"`,
  each run REPEATS times from a fresh process, as an operator's shell would start them.
  Goal: `deployer status P` <= 300 ms. Python writes no bytecode cache when
  PYTHONDONTWRITEBYTECODE is set (as on the development machines); a pip or uv install
  compiles it, so the venv is compiled first (`compileall`) and the figure says so.
- `metrics.*`: the state of a busy installation written straight through the store (200
  plans x 500 tenants, 2,000 tasks in flight, the events stream full at its default bound
  of 100,000 entries), then a fresh `deployer metrics` exporter scraped: its first scrape,
  then REPEATS scrapes each after 5,000 more events (about 15 s of a busy system). Goal:
  `/metrics` <= 300 ms.

`python -m benchmarks.observability [cli] [metrics]` (both by default; ~2 min).
"""

from __future__ import annotations

import compileall
import os
import resource
import subprocess
import sys
import sysconfig
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from benchmarks import common

REPEATS = int(os.environ.get("BENCH_OBS_REPEATS", "15"))
PLANS, TENANTS, INFLIGHT_PER_PLAN = 200, 500, 10
EVENTS = 100_000
EVENTS_PER_INTERVAL = 5_000
DEPLOYER = str(Path(sys.executable).parent / "deployer")


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) of the child, and its exit code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode:
        sys.stderr.write(proc.stderr.decode(errors="replace")[-2000:])
    return wall, cpu, proc.returncode


def _figure(name: str, argv: list[str], env: dict[str, str]) -> None:
    walls, cpus = [], []
    _timed(argv, env)  # warm the page cache
    for _ in range(REPEATS):
        wall, cpu, code = _timed(argv, env)
        if code:
            raise RuntimeError(f"{argv} exited {code}")
        walls.append(wall * 1000)
        cpus.append(cpu * 1000)
    common.emit(
        name,
        wall_ms_median=round(common.median(walls)),
        wall_ms_min=round(min(walls)),
        wall_ms_p90=round(common.pct(walls, 0.9)),
        cpu_ms_median=round(common.median(cpus)),
        runs=REPEATS,
        load=round(os.getloadavg()[0], 1),
    )


def _plan(store: Any, plan_id: str, n: int) -> None:
    from deployer.models import TenantConfig
    from deployer.state.store import TaskRow

    template = TenantConfig.model_validate(common.tenant(0, ["x"])).model_dump_json(by_alias=True)
    rows = [TaskRow(f"t{i:06d}", 1, template.replace("t000000", f"t{i:06d}")) for i in range(n)]
    assert store.create_plan(plan_id, rows, INFLIGHT_PER_PLAN, uuid.uuid4().hex[:8] + "-")


def cli(server: common.Server) -> None:
    from deployer.redis_client import client_for
    from deployer.settings import get_settings
    from deployer.state.store import Store

    settings = get_settings()
    store = Store(client_for(settings.state_url), settings)
    plan_id = f"cli-{uuid.uuid4().hex[:6]}"
    _plan(store, plan_id, TENANTS)
    site = sysconfig.get_paths()["purelib"]
    compileall.compile_dir(site, quiet=2, workers=2)
    compileall.compile_dir(str(common.ROOT / "deployer"), quiet=2)
    env = common.env_for(server)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    common.emit("cli.setup", plan=plan_id, tenants=TENANTS, bytecode="compiled")
    _figure("cli.help", [DEPLOYER, "--help"], env)
    _figure("cli.import", [sys.executable, "-c", "import deployer.cli"], env)
    _figure("cli.status", [DEPLOYER, "status", plan_id], env)
    _figure("cli.status_json", [DEPLOYER, "status", plan_id, "--json"], env)
    _figure("cli.task", [DEPLOYER, "task", "--tenant", "t000007"], env)
    _figure("cli.python", [sys.executable, "-c", "pass"], env)


def _busy_state(server: common.Server) -> None:
    from deployer.redis_client import client_for
    from deployer.settings import get_settings
    from deployer.state.store import Store

    settings = get_settings()
    store = Store(client_for(settings.state_url), settings)
    t0 = time.perf_counter()
    plan_ids = [f"m{p:03d}-{uuid.uuid4().hex[:4]}" for p in range(PLANS)]
    for plan_id in plan_ids:
        _plan(store, plan_id, TENANTS)
    r = server.r
    now = int(time.time() * 1000)
    pipe = r.pipeline(transaction=False)
    for p, plan_id in enumerate(plan_ids):
        for i in range(INFLIGHT_PER_PLAN):
            task_id = f"task-{plan_id}:t{i:06d}"
            pipe.zadd("deployer:inflight", {task_id: now + 60_000})
            pipe.hset(f"deployer:task:{task_id}", "cursor", f"tok:0:1:{i % 3}")
        pipe.hset(
            f"deployer:plan:{plan_id}",
            mapping={"c:COMPLETED": 200, "c:PENDING": 290, "c:RUNNING": 10, "status": "RUNNING"},
        )
        if p % 50 == 0:
            pipe.execute()
    pipe.execute()
    _add_events(r, plan_ids, EVENTS)
    common.emit(
        "metrics.setup",
        plans=PLANS,
        tenants_per_plan=TENANTS,
        inflight=PLANS * INFLIGHT_PER_PLAN,
        events=r.xlen("deployer:events"),
        seconds=round(time.perf_counter() - t0, 1),
    )
    return None


_seq = 0


def _add_events(r: Any, plan_ids: list[str], n: int) -> None:
    """Events as a busy system writes them (through the same Lua `emit` the scripts use):
    each tenant's stage start and end, then its end, some failed."""
    global _seq
    from deployer import audit

    stages = ["asbc-gateway", "portal", "blue-green-gateway", "ob-service"]
    pipe = r.pipeline(transaction=False)
    script = __import__("deployer.state.scripts", fromlist=["load"]).load(r, "event_record")
    for k in range(n):
        _seq += 1
        plan_id = plan_ids[_seq % len(plan_ids)]
        tenant = f"t{(_seq // 10) % TENANTS:06d}"
        kind = ("STAGE_STARTED", "STAGE_COMPLETED")[_seq % 2]
        fields = ["type", kind, "planId", plan_id, "taskId", f"task-{plan_id}:{tenant}",
                  "tenantId", tenant, "stage", stages[(_seq // 2) % 4],
                  "stageIndex", (_seq // 2) % 4, "ts", int(time.time() * 1000)]  # fmt: skip
        if _seq % 8 == 7:
            fields[1] = "TASK_FAILED" if _seq % 64 == 63 else "TASK_COMPLETED"
        script(keys=["deployer:events"], args=[100_000, *fields], client=pipe)
        if k % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    del audit


def metrics(server: common.Server) -> None:
    _busy_state(server)
    port = common.free_port()
    proc = subprocess.Popen(
        [DEPLOYER, "metrics", "--port", str(port)],
        env=common.env_for(server),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    common._procs.append(proc)
    url = f"http://127.0.0.1:{port}/metrics"

    def up() -> bool:
        try:
            with httpx.Client() as c:
                c.head(url.replace("/metrics", "/"), timeout=0.5)
            return True
        except httpx.HTTPError:
            return False

    common.wait_until(up, 60, 0.05)
    plan_ids = [str(p) for p in server.r.zrange("deployer:plans", 0, -1)]
    with httpx.Client(timeout=120) as client:
        t0 = time.perf_counter()
        first = client.get(url)
        first_ms = (time.perf_counter() - t0) * 1000
        first.raise_for_status()
        times = []
        for _ in range(REPEATS):
            _add_events(server.r, plan_ids, EVENTS_PER_INTERVAL)
            t0 = time.perf_counter()
            client.get(url).raise_for_status()
            times.append((time.perf_counter() - t0) * 1000)
    common.emit(
        "metrics.scrape",
        first_ms=round(first_ms),
        then_ms_median=round(common.median(times)),
        then_ms_p90=round(common.pct(times, 0.9)),
        new_events_between=EVENTS_PER_INTERVAL,
        series=sum(1 for line in first.text.splitlines() if line and not line.startswith("#")),
        bytes=len(first.content),
        load=round(os.getloadavg()[0], 1),
    )


def main(argv: list[str]) -> None:
    server = common.setup()
    wanted = set(argv) or {"cli", "metrics"}
    if "cli" in wanted:
        cli(server)
    if "metrics" in wanted:
        metrics(server)


if __name__ == "__main__":
    main(sys.argv[1:])
