"""The run context: a frozen value, changed only by named transitions, and one wire codec
whose output is the public format byte for byte (docs/contracts.md §4)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from deployer.context import TaskRuntimeContext
from deployer.models import RunKind

#: The context as the task hash stores it (`ctx`) and other languages read it: field order,
#: wire names, compact separators, UTF-8 as is.
STORED = (
    '{"planId":"p","taskId":"task-p:é","tenantId":"é","runId":"r1","runKind":"ROLLBACK",'
    '"token":"tok","leaseEpoch":2,"stageCount":4,"stageIndex":1,"stepIndex":1,"attempt":3,'
    '"additionalData":{"planVersion":19},'
    '"scratch":{"started":1764000000.123456,"waited":0.30000000000000004,"seen":{"a":"v19"}}}'
)


def sample() -> TaskRuntimeContext:
    return TaskRuntimeContext.from_json(STORED)


def test_the_codec_keeps_the_public_wire_format_byte_for_byte():
    ctx = sample()
    assert ctx.to_json() == STORED
    assert ctx.to_wire() == json.loads(STORED)
    assert list(ctx.to_wire()) == list(json.loads(STORED))
    assert TaskRuntimeContext.from_wire(ctx.to_wire()) == ctx
    # a context encoded for the next stage is checkpointed from that very object
    nxt = ctx.next_stage()
    wire = nxt.encode_for_next_stage()
    assert nxt.to_wire() is wire
    assert nxt.to_json() == nxt.model_dump_json(by_alias=True)
    # snake_case names are read too (as before), never written
    assert (
        TaskRuntimeContext.from_wire(
            {"plan_id": "p", "task_id": "t", "tenant_id": "x", "run_id": "r"}
        )
        .to_json()
        .startswith('{"planId":"p","taskId":"t","tenantId":"x","runId":"r","runKind":')
    )


def test_a_context_cannot_be_changed_in_place():
    ctx = sample()
    with pytest.raises(ValidationError):
        ctx.stage_index = 3  # type: ignore[misc]
    assert ctx.stage_index == 1


def test_transitions_return_new_contexts_and_leave_the_old_one_alone():
    ctx = sample()
    waited = ctx.after_wait({"progress": "1/2", "seen": {"b": "v20"}})
    assert (waited.step_index, waited.attempt) == (1, 4)
    assert waited.scratch == {**ctx.scratch, "progress": "1/2", "seen": {"b": "v20"}}
    stepped = ctx.next_step()
    assert (stepped.step_index, stepped.attempt, stepped.scratch) == (2, 0, {})
    moved = ctx.next_stage()
    assert (moved.stage_index, moved.step_index, moved.attempt, moved.scratch) == (2, 0, 0, {})
    assert moved.checkpoint == 1 and ctx.checkpoint == 0
    restarted = ctx.restart_stage()
    assert (restarted.stage_index, restarted.step_index, restarted.attempt) == (1, 0, 0)
    retried = ctx.for_retry(0)
    assert (retried.stage_index, retried.token, retried.scratch, retried.checkpoint) == (
        0,
        "",
        {},
        -1,
    )
    assert ctx.with_token("t2").token == "t2" and ctx.with_lease_epoch(7).lease_epoch == 7
    assert ctx.to_json() == STORED  # untouched by all of the above
    for other in (waited, stepped, moved, restarted, retried):
        assert TaskRuntimeContext.from_json(other.to_json()) == other


def test_a_new_run_starts_at_its_first_stage_with_its_plan_version():
    ctx = TaskRuntimeContext.start("p", "t", "x", "r", RunKind.FORWARD, 20, 3)
    assert (ctx.stage_index, ctx.stage_count, ctx.plan_version, ctx.checkpoint) == (0, 3, 20, -1)
    assert ctx.to_wire()["additionalData"] == {"planVersion": 20}
