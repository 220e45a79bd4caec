"""`executor.run_stage` as a table: every gate verdict x every step result, against a stub of
the `StageStore` protocol (the real-Redis paths are in tests/integration and tests/e2e).

What each row pins: which Outcome the stage task gets, whether the steps ran, and what the
store was asked to do (checkpoint, fail with which code).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from deployer import executor
from deployer.context import TaskRuntimeContext
from deployer.errors import (
    Code,
    DiscoveryError,
    ScriptReplyError,
    StaleRun,
    StepFailed,
)
from deployer.executor import LEASE_WAIT_SECONDS, Halt, HaltReason, Outcome, Proceed, Reschedule
from deployer.models import StageSpec, StepSpec
from deployer.settings import Settings
from deployer.state.replies import EndVerdict, FailVerdict, Gate, StageEnd, StageGate
from stages import registry
from stages.base import Done, Step, StepEnv, StepResult, Wait

STEP_TYPE = "table-scripted"


class Scripted(Step):
    """A step that does what the current row says (and counts its runs)."""

    type_name = STEP_TYPE

    def __init__(self) -> None:
        self.act: Callable[[], StepResult] = Done
        self.runs = 0

    def run(self, step: StepSpec, ctx: TaskRuntimeContext, env: StepEnv) -> StepResult:
        self.runs += 1
        return self.act()


@dataclass
class StubStore:
    """Answers as the scripts would; records what the executor asked of it."""

    gate: StageGate
    end: StageEnd = field(default_factory=lambda: StageEnd(EndVerdict.OK))
    fail_verdict: FailVerdict = FailVerdict.FAILED
    ended: list[bool] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (reason, code)
    fold_window_seconds: float = 60.0

    def begin_stage(self, ctx: TaskRuntimeContext, stage: StageSpec, worker: str = "") -> StageGate:
        return self.gate

    def end_stage(self, ctx: TaskRuntimeContext, stage: StageSpec, is_last: bool) -> StageEnd:
        self.ended.append(is_last)
        return self.end

    def fail(
        self, ctx: TaskRuntimeContext, stage_name: str, reason: str, code: str = Code.STEP_FAILED
    ) -> FailVerdict:
        self.failed.append((reason, code))
        return self.fail_verdict


def _raise(exc: Exception) -> Callable[[], StepResult]:
    def act() -> StepResult:
        raise exc

    return act


#: Every step result, by name: what the step does.
STEP_RESULTS: dict[str, Callable[[], StepResult]] = {
    "done": Done,
    "wait": lambda: Wait(1.5, {"progress": "1/2 instances at v20"}),
    "step-failed": _raise(StepFailed("instance answered 500")),
    "coded-error": _raise(DiscoveryError("no ob-service instance available")),
    "exception": _raise(RuntimeError("boom")),
    "stale-run": _raise(StaleRun("run r1 no longer owns tenant t1")),
}

#: What a gate that does not let the stage run answers, whatever the steps would do:
#: (halt reason, plan slot freed), or None for "re-sent after the lease wait".
REFUSED: dict[Gate, tuple[HaltReason, bool] | None] = {
    Gate.STALE: ("stale", False),
    Gate.BUSY: None,
    Gate.PAUSED: ("paused", True),
    Gate.CANCELLED: ("cancelled", True),
    Gate.REDELIVERED: ("redelivered", True),
    Gate.FORGED: ("forged", False),
    Gate.SUPERSEDED: ("superseded", True),
}


@pytest.fixture()
def step(monkeypatch: pytest.MonkeyPatch) -> Iterator[Scripted]:
    scripted = Scripted()
    monkeypatch.setitem(registry.steps(), STEP_TYPE, scripted)
    yield scripted


@pytest.fixture()
def env() -> Iterator[StepEnv]:
    # Never used for a round trip here (no row takes the lease anew); a client is required.
    client = redis.Redis()
    yield StepEnv(settings=Settings(), target=client)
    client.close()


def _ctx(stage_count: int = 2) -> TaskRuntimeContext:
    return TaskRuntimeContext(
        plan_id="p", task_id="task-p:t1", tenant_id="t1", run_id="r1", token="r1.0",
        stage_count=stage_count,
    )  # fmt: skip


STAGE = StageSpec(
    name="bg", service="bg", steps=[StepSpec(type=STEP_TYPE, name="write", params={})]
)


def test_the_table_covers_every_gate_verdict() -> None:
    assert set(REFUSED) | {Gate.OK} == set(Gate)


@pytest.mark.parametrize("result", list(STEP_RESULTS))
@pytest.mark.parametrize("gate", list(Gate))
def test_every_gate_verdict_with_every_step_result(
    gate: Gate, result: str, step: Scripted, env: StepEnv
) -> None:
    store = StubStore(StageGate(gate, detail="x"))
    step.act = STEP_RESULTS[result]
    ctx = _ctx()
    outcome = executor.run_stage(store, env, ctx, STAGE)

    if gate is not Gate.OK:
        assert step.runs == 0, "a refused stage never runs its steps"
        assert not store.ended
        expected = REFUSED[gate]
        if expected is None:
            assert isinstance(outcome, Reschedule) and outcome.ctx is ctx
            assert outcome.countdown == LEASE_WAIT_SECONDS and "tenant lease" in outcome.why
            assert not store.failed
            return
        assert isinstance(outcome, Halt)
        assert (outcome.why, outcome.plan_slot_freed) == expected
        if gate is Gate.REDELIVERED:
            assert "delivered x times" in outcome.reason
            assert store.failed == [(outcome.reason, Code.REDELIVERY_LIMIT_REACHED)]
        else:
            assert not store.failed
        return

    assert step.runs == 1
    match result:
        case "done":
            assert isinstance(outcome, Proceed)
            assert (outcome.ctx.stage_index, outcome.ctx.step_index) == (1, 0)
            assert ctx.stage_index == 0, "the context is frozen: the next stage gets a new one"
            assert store.ended == [] and not store.failed, "its end is the next begin's"
        case "wait":
            assert isinstance(outcome, Reschedule)
            assert (outcome.countdown, outcome.why) == (1.5, "1/2 instances at v20")
            assert outcome.ctx.attempt == 1
            assert outcome.ctx.scratch == {"progress": "1/2 instances at v20"}
            assert not store.ended and not store.failed
        case "step-failed" | "coded-error" | "exception":
            code = {"step-failed": Code.STEP_FAILED, "coded-error": Code.NO_INSTANCES,
                    "exception": Code.STEP_FAILED}[result]  # fmt: skip
            assert isinstance(outcome, Halt)
            assert (outcome.why, outcome.plan_slot_freed) == ("failed", True)
            assert outcome.reason.startswith("stage bg, step write: ")
            assert store.failed == [(outcome.reason, code)]
            assert not store.ended
        case "stale-run":
            assert outcome == Halt("stale")
            assert not store.failed and not store.ended
        case _:
            pytest.fail(f"no expectation for step result {result}")


@pytest.mark.parametrize(
    ("end", "expected"),
    [
        (StageEnd(EndVerdict.DONE, waiting=0), Halt("done", plan_slot_freed=False)),
        (StageEnd(EndVerdict.DONE, waiting=3), Halt("done", plan_slot_freed=True)),
        (StageEnd(EndVerdict.STALE), Halt("stale")),
        (StageEnd(EndVerdict.FORGED), Halt("stale")),
    ],
)
def test_the_last_stage_ends_as_the_checkpoint_says(
    end: StageEnd, expected: Outcome, step: Scripted, env: StepEnv
) -> None:
    store = StubStore(StageGate(Gate.OK), end=end)
    outcome = executor.run_stage(store, env, _ctx(stage_count=1), STAGE)
    assert outcome == expected and store.ended == [True]


@pytest.mark.parametrize("verdict", [FailVerdict.STALE, FailVerdict.FORGED])
def test_a_failure_another_run_owns_halts_as_stale(
    verdict: FailVerdict, step: Scripted, env: StepEnv
) -> None:
    store = StubStore(StageGate(Gate.OK), fail_verdict=verdict)
    step.act = STEP_RESULTS["exception"]
    assert executor.run_stage(store, env, _ctx(), STAGE) == Halt("stale")


def test_a_lost_connection_in_a_step_is_the_workers_not_the_tasks(
    step: Scripted, env: StepEnv
) -> None:
    store = StubStore(StageGate(Gate.OK))
    step.act = _raise(redis.ConnectionError("gone"))
    with pytest.raises(redis.ConnectionError):
        executor.run_stage(store, env, _ctx(), STAGE)
    assert not store.failed


@pytest.mark.parametrize(
    "raw",
    [["GO"], [], ["ok"], ["RUN", "", "1", "3"]],
)
def test_a_gate_verdict_no_one_knows_is_an_error_never_run_the_steps(raw: list[Any]) -> None:
    with pytest.raises(ScriptReplyError) as refused:
        StageGate.from_reply(raw)
    assert refused.value.code == Code.SCRIPT_REPLY_INVALID


def test_a_known_gate_reply_decodes_to_named_fields() -> None:
    assert StageGate.from_reply(["OK", "PENDING", "1", "7"]) == StageGate(
        Gate.OK, "PENDING", acquired=True, epoch=7
    )
    assert StageGate.from_reply(["BUSY", "r9.0"]) == StageGate(Gate.BUSY, "r9.0")


@pytest.mark.parametrize(("window", "ends_on_its_own"), [(60.0, False), (0.0, True)])
def test_a_stage_within_the_fold_window_leaves_its_end_to_the_next_begin(
    window: float, ends_on_its_own: bool, step: Scripted, env: StepEnv
) -> None:
    """Within the window the next stage's begin records the end (no round trip here); a
    stage that ran longer ends on its own, renewing the lease for its next message's wait.
    Either way the next stage gets the same context."""
    store = StubStore(StageGate(Gate.OK), fold_window_seconds=window)
    outcome = executor.run_stage(store, env, _ctx(stage_count=2), STAGE)
    assert isinstance(outcome, Proceed)
    assert (outcome.ctx.stage_index, outcome.ctx.step_index, outcome.ctx.attempt) == (1, 0, 0)
    assert store.ended == ([False] if ends_on_its_own else [])


def test_the_last_stage_always_ends_on_its_own(step: Scripted, env: StepEnv) -> None:
    store = StubStore(StageGate(Gate.OK), end=StageEnd(EndVerdict.DONE), fold_window_seconds=60)
    assert executor.run_stage(store, env, _ctx(stage_count=1), STAGE) == Halt("done")
    assert store.ended == [True]
