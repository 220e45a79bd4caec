"""What a message may make the worker send on (tasks/relays.py): deployer's own chains pass,
everything else names why it is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from deployer.context import TaskRuntimeContext
from deployer.models import StageSpec
from tasks.chains import build_chain
from tasks.relays import MAX_CHAIN, relay_problem


def own_chain(stages: int = 4) -> list[dict[str, Any]]:
    """The `chain` embed of a first stage message, exactly as send_dispatches sends it."""
    ctx = TaskRuntimeContext(planId="p", taskId="task-p:t", tenantId="t", runId="r")
    specs = [StageSpec(name=f"s{i}", service="portal", steps=[]) for i in range(stages)]
    _first, *rest = build_chain(specs, ctx).tasks
    return json.loads(json.dumps([dict(sig) for sig in reversed(rest)]))


def sig(task: str = "deployer.run_stage", **change: Any) -> dict[str, Any]:
    base = own_chain(2)[0]
    return {**base, "task": task, **change}


def test_deployers_own_chains_pass():
    assert relay_problem("deployer.run_stage", {"chain": own_chain(4)}, {}) is None
    assert relay_problem("deployer.run_stage", {"chain": own_chain(1)}, {}) is None  # none left
    # what celery-node and Celery send when nothing is embedded
    empty = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    for task in ("deployer.pause", "deployer.submit_plan", "deployer.run_stage"):
        assert relay_problem(task, empty, {"group": None, "groups": []}) is None
        assert relay_problem(task, None, {}) is None


@pytest.mark.parametrize("task", ["deployer.pause", "deployer.submit_plan", "deployer.cancel"])
@pytest.mark.parametrize("key", ["chain", "callbacks", "errbacks"])
def test_control_tasks_embed_nothing(task, key):
    problem = relay_problem(task, {key: [sig("billing.refund_all")]}, {})
    assert problem is not None and problem.startswith(f"embed.{key} refused")
    # not even a chain of deployer's own stages
    assert relay_problem(task, {key: own_chain(2)}, {}) is not None


@pytest.mark.parametrize(
    ("chain", "reason"),
    [
        ([sig("billing.refund_all")], "embed.chain[0] names task 'billing.refund_all'"),
        ([sig("celery.chord_unlock")], "names task 'celery.chord_unlock'"),
        ([sig(options={"queue": "billing"})], "queue 'billing' is not deployer.stages"),
        ([sig(options={"link": [sig("billing.x")]})], "options ['link'] are not deployer's"),
        ([sig(options={"link_error": [sig()]})], "options ['link_error'] are not deployer's"),
        ([sig(options={"exchange": "amq.direct"})], "options ['exchange'] are not deployer's"),
        ([sig(options={"chain": [sig("x")]})], "options ['chain'] are not deployer's"),
        ([sig(subtask_type="group")], "is a group or chord"),
        ([sig(kwargs={"a": 1})], "has keyword arguments"),
        ([sig(args=[])], "arguments are not one stage"),
        ([sig(args=["x", "y"])], "arguments are not one stage"),
        ([sig(extra=1)], "has keys ['extra']"),
        ([sig(options={"priority": 1000})], "priority is not an integer 0..255"),
        ([own_chain(2)[0], "not a signature"], "embed.chain[1] is not a signature"),
        ([own_chain(2)[0]] * (MAX_CHAIN + 1), f"at most {MAX_CHAIN} stages"),
    ],
)
def test_a_stage_chain_carries_only_deployers_own_stages(chain, reason):
    problem = relay_problem("deployer.run_stage", {"chain": chain}, {})
    assert problem is not None and reason in problem, problem


@pytest.mark.parametrize("key", ["callbacks", "errbacks"])
def test_stages_link_nothing(key):
    problem = relay_problem("deployer.run_stage", {"chain": own_chain(2), key: [sig()]}, {})
    assert problem == f"embed.{key} refused: deployer links no task"


def test_no_message_names_a_group_or_a_chord():
    assert relay_problem("deployer.pause", {}, {"group": "g-1"}) == (
        "names a group (deployer sends none)"
    )
    assert relay_problem("deployer.run_stage", {"chord": {"task": "x"}}, {}) is not None
