"""What a stage's bookkeeping costs the state store: the start and end scripts, server side.

No worker and no Celery: a plan is created through the store, its tasks take their slots,
and every task runs 4 stages through `Store.begin_stage` / `Store.end_stage` (the very
scripts a stage task calls). Prints the wall time per stage (client included) and the
server's own microseconds per script call (INFO commandstats, `evalsha`), which is what the
per-plan and per-tenant event indices (deployer/audit.py) add to.
"""

from __future__ import annotations

import json
import time

from benchmarks import common

TENANTS = 2000
STAGES = 4


def main() -> None:
    server = common.Server()
    from deployer.models import StageSpec
    from deployer.settings import Settings
    from deployer.state.store import Store, TaskRow

    store = Store(server.r, Settings(redis_url=server.url))
    config = json.dumps({"tenantId": "x"})
    store.create_plan("bench", [TaskRow(f"t{i}", STAGES, config) for i in range(TENANTS)],
                      TENANTS, "run-")  # fmt: skip
    slots = store.fill("bench")
    stage = StageSpec(name="s", service="s", steps=[])
    from deployer.context import TaskRuntimeContext

    server.r.config_resetstat()
    started = time.perf_counter()
    for slot in slots:
        ctx = TaskRuntimeContext(plan_id="bench", task_id=slot.task_id,
                                 tenant_id=slot.task_id.rsplit("_", 1)[-1].rsplit(":", 1)[-1],
                                 run_id=slot.run_id, token=slot.token)  # fmt: skip
        for index in range(STAGES):
            store.begin_stage(ctx, stage)
            ctx = ctx.next_stage()
            store.end_stage(ctx, stage, is_last=index == STAGES - 1)
    elapsed = time.perf_counter() - started
    stats = server.r.info("commandstats")["cmdstat_evalsha"]
    common.emit(
        "stage_bookkeeping",
        stages=TENANTS * STAGES,
        wall_us_per_stage=round(elapsed / (TENANTS * STAGES) * 1e6, 1),
        server_us_per_script=round(float(stats["usec_per_call"]), 2),
        scripts=int(stats["calls"]),
        events=int(server.r.xlen("deployer:events")),
        used_memory_mb=round(int(server.r.info("memory")["used_memory"]) / 2**20, 1),
    )


if __name__ == "__main__":
    main()
