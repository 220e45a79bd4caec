"""What a stage attempt reports when it ends its chain: Flower's Result column, in words."""

from __future__ import annotations

from typing import get_args

from deployer.context import TaskRuntimeContext
from deployer.executor import HaltReason, Reschedule
from tasks.stage import HALTED, waiting_summary


def _ctx(attempt: int) -> TaskRuntimeContext:
    return TaskRuntimeContext(
        plan_id="p", task_id="task-p_t1", tenant_id="t1", run_id="r", attempt=attempt
    )


def test_a_poll_attempt_says_what_it_waits_for_and_when_it_comes_back():
    out = waiting_summary(Reschedule(_ctx(2), 3.0, "1/2 blue-green-gateway instances at v20"))
    assert out == "1/2 blue-green-gateway instances at v20; stage re-sent, again in 3s (attempt 2)"


def test_a_stage_waiting_for_a_busy_tenant_says_so():
    out = waiting_summary(Reschedule(_ctx(0), 2.0, "waiting for the tenant lease (another run)"))
    assert out.startswith("waiting for the tenant lease") and "again in 2s" in out


def test_every_way_a_chain_ends_has_words():
    assert set(HALTED) == set(get_args(HaltReason))
    assert all(HALTED.values())
