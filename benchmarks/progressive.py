"""Figure 5: progressive completion under a 1,000-tenant burst, and idle latency.

Burst: 1,000 tenants x 4 no-op stages, raw Celery chains vs deployer plans with and without
an in-flight cap (plan maxConcurrency); reported as the fraction of the run's wall time by
which 50 % / 99 % of tenants were done. Idle: a one-tenant plan with no fleet wait (one and
four KeyValueWrite+Broadcast stages), submit -> COMPLETED, p50 over repeated submits.
"""

from __future__ import annotations

import time
import uuid

from benchmarks import common, overhead, plugins

CAPS = (1000, 100, 16)
REPEATS = 2
IDLE_SUBMITS = 25


def idle_latency(server: common.Server, services: list[str]) -> list[float]:
    out = []
    for _ in range(IDLE_SUBMITS):
        plan_id = f"idle-{uuid.uuid4().hex[:8]}"
        p = common.plan(plan_id, 1, services, 1)
        t0 = time.perf_counter()
        common.submit(p)
        common.wait_until(
            lambda pid=plan_id: common.plan_status(server, pid) == "COMPLETED", 30, 0.001
        )
        out.append(time.perf_counter() - t0)
        time.sleep(0.05)
    return out


def main() -> None:
    server = common.setup()
    with common.worker(concurrency=2):
        overhead.warm_up(server)
        runs: dict[str, list[dict[str, float]]] = {}
        for _ in range(REPEATS):
            runs.setdefault("raw", []).append(overhead.run_raw(server))
            for cap in CAPS:
                r = overhead.run_deployer(server, "noop", max_concurrency=cap)
                runs.setdefault(f"deployer_cap{cap}", []).append(r)
        for name, rs in runs.items():
            common.emit(
                f"progressive.{name}",
                tenants=overhead.TENANTS,
                wall_s_median=round(common.median([r["wall_s"] for r in rs]), 3),
                p50_done_frac=round(common.median([r["p50_done_frac"] for r in rs]), 3),
                p99_done_frac=round(common.median([r["p99_done_frac"] for r in rs]), 3),
                p50_done_frac_runs=[round(r["p50_done_frac"], 3) for r in rs],
                goal_p50_done_frac=0.5,
            )
        for label, services in (
            ("1_stage", plugins.services("kv")[:1]),
            ("4_stages", plugins.services("kv")),
        ):
            lat = idle_latency(server, services)
            common.emit(
                f"latency.idle.{label}",
                submits=len(lat),
                p50_ms=round(common.median(lat) * 1000, 1),
                p90_ms=round(common.pct(lat, 0.9) * 1000, 1),
                min_ms=round(min(lat) * 1000, 1),
                goal_p50_ms=50,
            )


if __name__ == "__main__":
    main()
