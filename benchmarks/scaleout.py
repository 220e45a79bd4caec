"""Figure 6: scale-out on a stage-bound plan (1,000 tenants x 4 no-op stages) with 1, 2 and 4
worker processes (one prefork worker, -c N), deployer and raw Celery side by side."""

from __future__ import annotations

from benchmarks import common, overhead

PROCESSES = (1, 2, 4)
REPEATS = 2


def main() -> None:
    server = common.setup()
    base: dict[str, float] = {}
    for n in PROCESSES:
        with common.worker(concurrency=n):
            overhead.warm_up(server)
            walls: dict[str, list[float]] = {"raw": [], "noop": []}
            for _ in range(REPEATS):
                walls["raw"].append(overhead.run_raw(server)["wall_s"])
                walls["noop"].append(overhead.run_deployer(server, "noop")["wall_s"])
        for kind, ws in walls.items():
            wall = common.median(ws)
            base.setdefault(kind, wall)
            stages = overhead.TENANTS * overhead.STAGES
            common.emit(
                f"scaleout.{kind}",
                processes=n,
                cores=2,
                wall_s_median=round(wall, 3),
                wall_s_runs=[round(w, 3) for w in ws],
                stages_per_s=round(stages / wall, 1),
                speedup_vs_1=round(base[kind] / wall, 2),
            )


if __name__ == "__main__":
    main()
