"""A tenant's later stages are served before other tenants' first stages (Redis broker)."""

from __future__ import annotations

from deployer.context import TaskRuntimeContext
from deployer.models import StageSpec, StepSpec
from tasks.chains import build_chain, stage_priority


def _stages(n: int) -> list[StageSpec]:
    return [
        StageSpec(name=f"s{i}", service=f"s{i}", steps=[StepSpec(type="noop", name="n")])
        for i in range(n)
    ]


def test_later_stages_carry_a_more_urgent_redis_priority():
    ctx = TaskRuntimeContext(plan_id="p", task_id="t", tenant_id="x", run_id="r", stage_count=5)
    sigs = build_chain(_stages(5), ctx).tasks
    priorities = [sig.options.get("priority") for sig in sigs]
    assert priorities == [stage_priority(i) for i in range(5)]
    if priorities[0] is not None:  # Redis: 0 is served first
        assert priorities == sorted(priorities, reverse=True)
        assert priorities[-1] == 0


def test_a_resumed_chain_keeps_the_priority_of_each_stage_index():
    ctx = TaskRuntimeContext(
        plan_id="p", task_id="t", tenant_id="x", run_id="r", stage_count=4, stage_index=2
    )
    sigs = build_chain(_stages(4), ctx).tasks
    assert [sig.options.get("priority") for sig in sigs] == [stage_priority(2), stage_priority(3)]
