"""CPU per stage on the worker side, and how often a stage converts its context.

No worker process and no broker: the `deployer.run_stage` task body is called in this
process (as a pool child would call it) for every stage of every task of a plan, against a
private Redis, and the process CPU time is divided by the stages run. That is the Python a
stage costs (decoding its arguments, the two bookkeeping scripts' client side, the steps,
encoding the next stage's context), without Celery's messaging, which `overhead` measures.
CPU time on a shared machine moves by ±15 % from run to run; the function calls per stage
(cProfile) do not, and tell a change of a few calls per stage apart.

The context's model conversions are counted by wrapping the model's pydantic validator and
serializer (dict→model and model→dict/JSON), so the figure holds for any version of the code.

    python -m benchmarks.stage_cpu [rounds]      # BENCH_STAGE_CPU_TENANTS (default 500)
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import time
from collections import Counter
from typing import Any

from benchmarks import common

TENANTS = int(os.environ.get("BENCH_STAGE_CPU_TENANTS", "500"))
STAGES = 4


class _Counting:
    """Delegates to a pydantic validator or serializer, counting the calls by name."""

    def __init__(self, inner: Any, counts: Counter[str], prefix: str) -> None:
        self._inner, self._counts, self._prefix = inner, counts, prefix

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._counts[f"{self._prefix}.{name}"] += 1
            return attr(*args, **kwargs)

        return counted


def _stages(kind: str) -> list[dict[str, Any]]:
    from deployer.models import StageSpec, StepSpec

    def steps(i: int) -> list[StepSpec]:
        if kind == "noop":
            return [StepSpec(type="noop", name=f"noop-{i}")]
        field = f"bench-{i}"
        return [
            StepSpec(type="key-value-write", name=f"kv-{i}",
                     params={"field": field, "value": {"tenantId": "x", "targetUnitName": "u"}}),
            StepSpec(type="broadcast", name=f"bc-{i}", params={"appName": field}),
        ]  # fmt: skip

    return [
        StageSpec(name=f"s{i}", service=f"s{i}", steps=steps(i)).model_dump(
            mode="json", by_alias=True
        )
        for i in range(STAGES)
    ]


def run(
    kind: str,
    plan_id: str,
    counts: Counter[str] | None = None,
    profile: cProfile.Profile | None = None,
) -> float:
    """CPU microseconds per stage of a plan of TENANTS tasks x STAGES `kind` stages;
    `counts` counts the context's conversions, `profile` the function calls."""
    from deployer.context import TaskRuntimeContext
    from deployer.models import TaskStatus
    from deployer.state.plans import Plans
    from deployer.state.store import TaskRow
    from tasks import runtime
    from tasks.stage import run_stage

    store = runtime.store()
    config = '{"tenantId":"x"}'
    rows = [TaskRow(f"{plan_id}-t{i}", STAGES, config) for i in range(TENANTS)]
    store.create_plan(plan_id, rows, TENANTS, "run-")
    slots = store.fill(plan_id)
    specs = _stages(kind)
    first = [
        TaskRuntimeContext(plan_id=plan_id, task_id=s.task_id, tenant_id=f"{plan_id}-t{i}",
                           run_id=s.run_id, token=s.token, stage_count=STAGES,
                           additional_data={"planVersion": 20}).model_dump(mode="json",
                                                                           by_alias=True)
        for i, s in enumerate(slots)
    ]  # fmt: skip
    saved = {}
    if counts is not None:
        for attr, prefix in (("__pydantic_validator__", "decode"),
                             ("__pydantic_serializer__", "encode")):  # fmt: skip
            saved[attr] = getattr(TaskRuntimeContext, attr)
            setattr(TaskRuntimeContext, attr, _Counting(saved[attr], counts, prefix))
    try:
        if profile is not None:
            profile.enable()
        started = time.process_time()
        for ctx in first:
            wire: Any = ctx
            for spec in specs:
                wire = run_stage(wire, spec)
        elapsed = time.process_time() - started
        if profile is not None:
            profile.disable()
    finally:
        for attr, value in saved.items():
            setattr(TaskRuntimeContext, attr, value)
    plan = Plans.of(store).get(plan_id)
    done = plan.count(TaskStatus.COMPLETED) if plan else 0
    if done != TENANTS:
        raise RuntimeError(f"{plan_id}: {done} of {TENANTS} tasks completed")
    return elapsed / (TENANTS * STAGES) * 1e6


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    common.setup()
    import logging

    logging.disable(logging.WARNING)
    for kind in ("noop", "kv"):
        run(kind, f"warm-{kind}")
        counts: Counter[str] = Counter()
        run(kind, f"count-{kind}", counts)
        per_stage = {k: round(v / (TENANTS * STAGES), 2) for k, v in sorted(counts.items())}
        profile = cProfile.Profile()
        run(kind, f"calls-{kind}", profile=profile)
        calls = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
        cpu = [run(kind, f"{kind}-{r}") for r in range(rounds)]
        common.emit(
            "stage_cpu",
            kind=kind,
            stages=TENANTS * STAGES,
            cpu_us_per_stage=round(common.median(cpu), 1),
            best_us_per_stage=round(min(cpu), 1),
            runs=[round(c, 1) for c in cpu],
            ctx_conversions_per_stage=round(sum(per_stage.values()), 2),
            # deterministic, unlike CPU time on a shared machine: every Python and builtin
            # function call a stage makes (the Redis client's included)
            calls_per_stage=round(calls / (TENANTS * STAGES), 1),
            conversions=per_stage,
        )


if __name__ == "__main__":
    main()
