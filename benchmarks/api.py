"""Figures for `deployer serve`: the plan page and paginated task lists of a
100,000-tenant plan (goal: median <= 100 ms), and the SSE stream keeping up with a
1,000-tenant plan run at full speed by a real worker.

The 100,000-tenant plan is written straight through the store (no worker, no chains): the
API only reads it. The server is the real `deployer serve` subprocess; the client is httpx
with keep-alive, as a dashboard or a script would be.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from benchmarks import common, plugins

BIG = 100_000
SSE_TENANTS = 1_000
REPEATS = 30


def serve(server: common.Server) -> tuple[str, Any]:
    port = common.free_port()
    proc = common.subprocess.Popen(
        [str(Path(sys.executable).parent / "deployer"), "serve", "--port", str(port)],
        cwd=common.ROOT,
        env=common.env_for(server),
        stdout=common.subprocess.DEVNULL,
        stderr=common.subprocess.DEVNULL,
    )
    common._procs.append(proc)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    common.wait_until(up, 60, 0.1)
    return url, proc


def big_plan(server: common.Server) -> str:
    from deployer.models import TenantConfig
    from deployer.redis_client import client_for
    from deployer.settings import get_settings
    from deployer.state.store import Store, TaskRow

    settings = get_settings()
    store = Store(client_for(settings.state_url), settings)
    plan_id = f"big-{uuid.uuid4().hex[:8]}"
    template = TenantConfig.model_validate(common.tenant(0, ["x"])).model_dump_json(by_alias=True)
    rows = [TaskRow(f"t{i:06d}", 1, template.replace("t000000", f"t{i:06d}")) for i in range(BIG)]
    t0 = time.perf_counter()
    assert store.create_plan(plan_id, rows, 500, uuid.uuid4().hex[:8] + "-")
    common.emit("api.big_plan_created", tenants=BIG, seconds=round(time.perf_counter() - t0, 2))
    # a realistic mix: a few failures far apart, the rest pending
    pipe = server.r.pipeline(transaction=False)
    for i in range(0, BIG, 10_000):
        pipe.hset(f"deployer:task:{store.plan_task_ids(plan_id, i, i)[0]}", "status", "FAILED")
    pipe.execute()
    return plan_id


def latency(client: httpx.Client, path: str) -> dict[str, Any]:
    client.get(path).raise_for_status()  # warm
    times = []
    size = 0
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        res = client.get(path)
        times.append((time.perf_counter() - t0) * 1000)
        res.raise_for_status()
        size = len(res.content)
    return {
        "median_ms": round(common.median(times), 1),
        "p95_ms": round(common.pct(times, 0.95), 1),
        "bytes": size,
    }


def pages(url: str, plan_id: str) -> None:
    """Median latency of each read an operator makes on the big plan (nothing else runs)."""
    paths = {
        "plan_json": f"/api/v1/plans/{plan_id}",
        "plan_page_html": f"/plans/{plan_id}",
        "tasks_first_page": f"/api/v1/plans/{plan_id}/tasks?limit=50",
        "tasks_last_page": f"/api/v1/plans/{plan_id}/tasks?limit=50&cursor={BIG - 50}",
        "tasks_status_pending": f"/api/v1/plans/{plan_id}/tasks?limit=50&status=PENDING",
        "tasks_status_failed_scan5000": f"/api/v1/plans/{plan_id}/tasks?limit=50&status=FAILED",
        "tasks_search_tenant": f"/api/v1/plans/{plan_id}/tasks?limit=50&q=t054321",
        "plans_list": "/api/v1/plans?limit=50",
    }
    with httpx.Client(base_url=url, timeout=30) as client:
        for name, path in paths.items():
            before = server_usec(url)
            figures = latency(client, path)
            spent = server_usec(url) - before
            figures["redis_ms_per_request"] = round(spent / 1000 / (REPEATS + 1), 2)
            common.emit(f"api.latency.{name}", tenants=BIG, goal_ms=100, **figures)


def server_usec(url: str) -> int:
    """Microseconds the Redis server spent executing commands so far (all clients). HGET is
    left out: only lua/task_scan.lua calls it here, and a script's inner calls are counted
    both on their own and in the script's EVALSHA."""
    import redis

    from deployer.settings import get_settings

    stats = redis.Redis.from_url(get_settings().state_url).info("commandstats")
    return sum(int(v["usec"]) for k, v in stats.items() if k != "cmdstat_hget")


def sse(server: common.Server, url: str) -> None:
    """Read the plan's SSE stream while a worker runs its 1,000 tenants at full speed."""
    plan_id = f"sse-{uuid.uuid4().hex[:8]}"
    received: list[tuple[float, dict[str, Any]]] = []
    opened = threading.Event()

    def read() -> None:
        with httpx.stream(
            "GET", f"{url}/api/v1/events/stream", params={"plan": plan_id}, timeout=120
        ) as res:
            for line in res.iter_lines():
                if line.startswith("retry:"):
                    opened.set()
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    received.append((time.time(), event))
                    if event["type"] == "PLAN_COMPLETED" or (
                        event["type"] == "TASK_COMPLETED" and done_count(received) == SSE_TENANTS
                    ):
                        return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    opened.wait(30)
    common.submit(common.plan(plan_id, SSE_TENANTS, plugins.services("noop"), SSE_TENANTS))
    finished = common.wait_plan(server, plan_id, 300)
    reader.join(60)
    in_stream = sum(
        1 for _, f in server.r.xrange("deployer:events", "-", "+") if f.get("planId") == plan_id
    )
    lags = [(t - int(e["id"].split("-")[0]) / 1000) * 1000 for t, e in received]
    last = received[-1][0] if received else float("nan")
    common.emit(
        "api.sse_keeps_up",
        tenants=SSE_TENANTS,
        events_in_stream=in_stream,
        events_received=len(received),
        lag_ms_median=round(common.median(lags), 1),
        lag_ms_p99=round(common.pct(lags, 0.99), 1),
        lag_ms_max=round(max(lags), 1) if lags else None,
        last_event_after_plan_done_ms=round((last - finished) * 1000, 1),
        plan_wall_s=round(finished - received[0][0], 2) if received else None,
    )


def done_count(received: list[tuple[float, dict[str, Any]]]) -> int:
    return sum(1 for _, e in received if e["type"] == "TASK_COMPLETED")


def main(argv: list[str]) -> None:
    """`python -m benchmarks.api [pages] [sse]` (default both)."""
    wanted = set(argv) or {"pages", "sse"}
    server = common.setup()
    url, _ = serve(server)
    if "pages" in wanted:
        pages(url, big_plan(server))
    if "sse" in wanted:
        with common.worker(concurrency=2):
            sse(server, url)


if __name__ == "__main__":
    main(sys.argv[1:])
