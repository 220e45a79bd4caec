"""Figure 1 (orchestration overhead) and the runs figures 5 and 6 reuse.

1,000 tenants x 4 stages run (a) as raw Celery chains of no-op tasks passing a ~1 KB dict,
(b) through deployer with no-op stages, (c) through deployer with KeyValueWrite+Broadcast
stages; all on one worker (prefork, 2 processes) with identical settings, events on and off.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from benchmarks import common, plugins

TENANTS = 1000
STAGES = plugins.STAGES
REPEATS = 3


def run_raw(server: common.Remote, n: int = TENANTS, stages: int = STAGES) -> dict[str, Any]:
    """n chains of `stages` no-op tasks; wall time from the first send to the last chain."""
    from celery import chain

    from benchmarks.apps import ctx_1kb, deployer

    server.r.delete("bench:done")
    before = server.commandstats()
    t0 = time.time()
    with deployer.producer_or_acquire() as producer:
        for i in range(n):
            sigs = [deployer.signature("bench.noop", args=(ctx_1kb(i),))]
            sigs += [deployer.signature("bench.noop") for _ in range(stages - 2)]
            sigs.append(deployer.signature("bench.noop_last"))
            chain(*sigs).apply_async(producer=producer)
    common.wait_until(lambda: server.r.llen("bench:done") >= n, 600)
    done = time.time()
    ends = [float(x) - t0 for x in server.r.lrange("bench:done", 0, -1)]
    return _summary("raw", t0, done, ends, n * stages, server, before)


def run_deployer(
    server: common.Remote,
    kind: str,
    n: int = TENANTS,
    max_concurrency: int | None = None,
) -> dict[str, Any]:
    """One plan of n tenants whose stages are the benchmark `kind` (noop | kv)."""
    plan_id = f"bench-{kind}-{uuid.uuid4().hex[:8]}"
    services = plugins.services(kind)
    p = common.plan(plan_id, n, services, max_concurrency or n)
    before = server.commandstats()
    t0 = time.time()
    common.submit(p)
    done = common.wait_plan(server, plan_id, 600)
    ends = [e - t0 for e in common.task_end_times(server, plan_id)]
    return _summary(kind, t0, done, ends, n * len(services), server, before)


def _summary(
    kind: str,
    t0: float,
    done: float,
    ends: list[float],
    stages: int,
    server: common.Remote,
    before: dict[str, int],
) -> dict[str, Any]:
    after = server.commandstats()
    commands = sum(after.values()) - sum(before.values())
    wall = max(ends) if ends else done - t0
    return {
        "kind": kind,
        "wall_s": wall,
        "stages_per_s": stages / wall,
        "commands_per_stage": commands / stages,
        "p50_done_frac": common.pct(ends, 0.5) / wall,
        "p99_done_frac": common.pct(ends, 0.99) / wall,
    }


def warm_up(server: common.Remote) -> None:
    run_raw(server, n=40)
    run_deployer(server, "noop", n=40)
    run_deployer(server, "kv", n=40)


def main() -> None:
    server = common.setup()
    for events in (True, False):
        env = common.env_for(server, BENCH_EVENTS="1" if events else "0")
        results: dict[str, list[dict[str, Any]]] = {"raw": [], "noop": [], "kv": []}
        with common.worker(env=env, concurrency=2):
            warm_up(server)
            for _ in range(REPEATS):  # interleaved, so background noise hits all three alike
                results["raw"].append(run_raw(server))
                results["noop"].append(run_deployer(server, "noop"))
                results["kv"].append(run_deployer(server, "kv"))
        walls = {k: [r["wall_s"] for r in v] for k, v in results.items()}
        for k, v in results.items():
            common.emit(
                f"overhead.{k}",
                events=events,
                tenants=TENANTS,
                stages=STAGES,
                wall_s_median=round(common.median(walls[k]), 3),
                wall_s_runs=[round(w, 3) for w in walls[k]],
                stages_per_s_median=round(common.median([r["stages_per_s"] for r in v]), 1),
                commands_per_stage=round(common.median([r["commands_per_stage"] for r in v]), 2),
                p50_done_frac=round(common.median([r["p50_done_frac"] for r in v]), 3),
                p99_done_frac=round(common.median([r["p99_done_frac"] for r in v]), 3),
            )
        # Ratios per repeat (same minute, same noise), then their median.
        for k in ("noop", "kv"):
            ratios = [b / a for a, b in zip(walls["raw"], walls[k], strict=True)]
            common.emit(
                f"overhead.ratio.{k}_over_raw",
                events=events,
                ratio_median=round(common.median(ratios), 3),
                ratio_runs=[round(x, 3) for x in ratios],
                goal=1.2 if k == "noop" else None,
            )


if __name__ == "__main__":
    main()
