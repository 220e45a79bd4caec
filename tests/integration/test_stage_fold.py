"""A stage's end folded into the next stage's begin, against real Redis (docs/reliability.md,
"A stage's end").

A stage that is not the last and ran within the fold window hands its context on without a
round trip; the next stage's begin records its checkpoint, context, duration and
STAGE_COMPLETED. What must not change: the next message's wait still has the whole lease
TTL (a stage that ran longer ends on its own and renews it), a message lost between stages
is still re-driven, each stage's STAGE_COMPLETED is written once and in order, and a task
paused between stages stops at the boundary.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from deployer import executor
from deployer.context import TaskRuntimeContext
from deployer.models import StageSpec, StepSpec
from deployer.planner import Planner
from deployer.redis_client import client_for
from deployer.redrive import Reconciler
from deployer.settings import Settings
from deployer.state.store import Dispatch, Slot, Store, now_ms
from stages import registry
from stages.base import Done, Step, StepEnv, StepResult
from tests.helpers import bg_tenant, fresh_db, plan, unique, wait_for

#: The lease TTL of these tests; the fold window is a tenth of it.
LEASE = 5.0
STEP_TYPE = "fold-test-sleep"


class Sleeping(Step):
    """Runs for `seconds` (a slow service call), then is done."""

    type_name = STEP_TYPE

    def __init__(self) -> None:
        self.seconds = 0.0

    def run(self, step: StepSpec, ctx: TaskRuntimeContext, env: StepEnv) -> StepResult:
        time.sleep(self.seconds)  # the step's own work, not a synchronisation
        return Done()


@pytest.fixture()
def private_db(redis_url: str) -> str:
    """A database of its own: the reconciler's claims must not touch other tests' tasks."""
    return fresh_db(redis_url, 10)


@pytest.fixture()
def r(private_db: str) -> redis.Redis:
    return redis.Redis.from_url(private_db, decode_responses=True)


@pytest.fixture()
def store(private_db: str) -> Iterator[Store]:
    settings = Settings(redis_url=private_db, target_redis_url=private_db, lease_ttl_seconds=LEASE)
    client = client_for(settings.state_url)
    yield Store(client, settings)
    client.close()


@pytest.fixture()
def env(store: Store, private_db: str) -> Iterator[StepEnv]:
    target = redis.Redis.from_url(private_db, decode_responses=True)
    yield StepEnv(settings=store.settings, target=target)
    target.close()


@pytest.fixture()
def step(monkeypatch: pytest.MonkeyPatch) -> Sleeping:
    sleeping = Sleeping()
    monkeypatch.setitem(registry.steps(), STEP_TYPE, sleeping)
    return sleeping


def _dispatched(store: Store) -> tuple[Dispatch, list[StageSpec]]:
    """One two-stage task, sent (into a list), and its stages with the sleeping step."""
    sent: list[Dispatch] = []
    planner = Planner(store, store.settings, sent.extend)
    plan_id = unique()
    tenant = bg_tenant(f"{plan_id}-t0", serviceNames=["blue-green-gateway", "ob-service"])
    planner.submit(plan(plan_id, [tenant]))
    (d,) = sent
    stages = [
        StageSpec(name=s.name, service=s.service, steps=[StepSpec(type=STEP_TYPE, name="work")])
        for s in d.run.stages
    ]
    assert len(stages) == 2
    return d, stages


def _events(r: redis.Redis, d: Dispatch) -> list[tuple[str, str]]:
    """(type, stage) of the task's events, in stream order."""
    entries: Any = r.xrange(f"deployer:events:plan:{d.context.plan_id}")
    return [
        (e["type"], e.get("stage", ""))
        for _id, e in entries
        if e.get("taskId") == d.task_id and e["type"] != "TASK_DISPATCHED"
    ]


def _first_stage_ran(
    store: Store, env: StepEnv
) -> tuple[Dispatch, list[StageSpec], executor.Proceed]:
    """A two-stage task whose quick first stage ran and handed its context on."""
    d, stages = _dispatched(store)
    outcome = executor.run_stage(store, env, d.context, stages[0])
    assert isinstance(outcome, executor.Proceed)
    return d, stages, outcome


def _task(r: redis.Redis, d: Dispatch) -> dict[str, str]:
    return r.hgetall(f"deployer:task:{d.task_id}")


def _lease_left_ms(r: redis.Redis, d: Dispatch) -> int:
    return int(r.pttl(f"deployer:lease:{d.context.tenant_id}"))


def test_a_quick_stage_leaves_its_end_to_the_next_begin_which_records_it_once_in_order(
    r: redis.Redis, store: Store, env: StepEnv, step: Sleeping
) -> None:
    d, (first, second), outcome = _first_stage_ran(store, env)
    assert _task(r, d)["checkpoint"] == "-1", "no round trip at the first stage's end"
    assert ("STAGE_COMPLETED", first.name) not in _events(r, d)

    # The next stage's message, delivered twice (a worker lost after its begin): its begin
    # records the first stage's end once.
    assert store.begin_stage(outcome.ctx, second).verdict == "OK"
    task = _task(r, d)
    assert task["checkpoint"] == "0"
    assert TaskRuntimeContext.from_json(task["ctx"]) == outcome.ctx
    done = executor.run_stage(store, env, outcome.ctx, second)
    assert done == executor.Halt("done", plan_slot_freed=False)

    assert _events(r, d) == [
        ("TASK_RUNNING", first.name),
        ("STAGE_STARTED", first.name),
        ("STAGE_COMPLETED", first.name),
        ("STAGE_STARTED", second.name),
        ("STAGE_STARTED", second.name),  # the redelivery's begin
        ("STAGE_COMPLETED", second.name),
        ("TASK_COMPLETED", ""),
    ]
    task = _task(r, d)
    assert (task["status"], task["checkpoint"], task["redeliveries"]) == ("COMPLETED", "1", "1")
    stats = r.hgetall("deployer:stats")
    assert stats[f"sdc|{first.name}"] == stats[f"sdc|{second.name}"] == "1"  # one duration each


@pytest.mark.parametrize("ran", [0.0, 2.0], ids=["within-the-window", "long"])
def test_the_next_messages_wait_keeps_the_whole_lease_after_any_stage(
    r: redis.Redis, store: Store, env: StepEnv, step: Sleeping, ran: float
) -> None:
    """The margin a stage's end used to renew: a quick stage's begin held the lease for the
    TTL plus the window, a long stage ends on its own and renews it. A wait in the queue
    shorter than the TTL is then never taken for a lost message."""
    d, (first, second) = _dispatched(store)
    step.seconds = ran
    outcome = executor.run_stage(store, env, d.context, first)
    ended = time.monotonic()
    assert isinstance(outcome, executor.Proceed)
    left = _lease_left_ms(r, d) + (time.monotonic() - ended) * 1000
    assert left >= LEASE * 1000 - 20, f"only {left:.0f} ms of the lease left for the queue"
    deadline = float(r.zscore("deployer:inflight", d.task_id) or 0)
    assert deadline >= now_ms() + LEASE * 1000 - (time.monotonic() - ended) * 1000 - 20
    assert _task(r, d)["checkpoint"] == ("0" if ran else "-1")

    # The next message waits in the queue for most of the TTL: later than the lease a
    # long stage's begin took would last, earlier than the one its end renewed.
    time.sleep(max(0.0, ended + LEASE - 0.8 - time.monotonic()))  # the queue wait itself
    reconciler = Reconciler(store, _no_launch, lambda plan_id: 0)
    assert not reconciler.claim(now=now_ms()).redriven, "re-driven while its message waited"
    step.seconds = 0.0
    assert executor.run_stage(store, env, outcome.ctx, second) == executor.Halt("done")
    assert [e for e in _events(r, d) if e[0] == "STAGE_COMPLETED"] == [
        ("STAGE_COMPLETED", first.name),
        ("STAGE_COMPLETED", second.name),
    ]
    assert _task(r, d)["status"] == "COMPLETED"


def _no_launch(slots: list[Slot]) -> list[Dispatch]:
    raise AssertionError("claims only")


def test_a_message_lost_between_stages_is_still_redriven_from_the_checkpoint(
    r: redis.Redis, store: Store, env: StepEnv, step: Sleeping
) -> None:
    d, (first, second), outcome = _first_stage_ran(store, env)
    # ... and the second stage's message is lost. Once the lease lapses, the reconciler
    # takes the task back and re-sends it from its checkpoint: the first stage, whose end
    # no begin recorded.
    lease = f"deployer:lease:{d.context.tenant_id}"
    wait_for(lambda: not r.exists(lease), LEASE * 3, what="the lease to lapse")
    reconciler = Reconciler(store, _no_launch, lambda plan_id: 0)
    (slot,) = reconciler.claim(now=now_ms()).redriven
    assert slot.task_id == d.task_id and slot.token != d.token
    again = TaskRuntimeContext.from_json(slot.ctx_json).with_token(slot.token)
    assert again.stage_index == 0

    # The re-driven run completes; the lost run's stray message, if it comes, is stale.
    assert executor.run_stage(store, env, outcome.ctx, second) == executor.Halt("stale")
    proceed = executor.run_stage(store, env, again, first)
    assert isinstance(proceed, executor.Proceed)
    assert executor.run_stage(store, env, proceed.ctx, second) == executor.Halt("done")
    assert [e for e in _events(r, d) if e[0].startswith("STAGE_COMPLETED")] == [
        ("STAGE_COMPLETED", first.name),
        ("STAGE_COMPLETED", second.name),
    ]
    assert _task(r, d)["status"] == "COMPLETED"


@pytest.mark.parametrize("control", ["PAUSE", "CANCEL"])
def test_a_task_paused_or_cancelled_between_stages_stops_at_the_boundary(
    r: redis.Redis, store: Store, env: StepEnv, step: Sleeping, control: str
) -> None:
    d, (first, second), outcome = _first_stage_ran(store, env)
    r.hset(f"deployer:task:{d.task_id}", mapping={"control": control, "controlBy": "ops"})

    halted = executor.run_stage(store, env, outcome.ctx, second)
    status, why = {"PAUSE": ("PAUSED", "paused"), "CANCEL": ("CANCELLED", "cancelled")}[control]
    assert halted == executor.Halt(why, plan_slot_freed=True)
    task = _task(r, d)
    assert (task["status"], task["checkpoint"]) == (status, "0"), "the first stage is done"
    assert TaskRuntimeContext.from_json(task["ctx"]) == outcome.ctx  # resumes at the second
    assert _events(r, d)[-2:] == [("STAGE_COMPLETED", first.name), (f"TASK_{status}", second.name)]
    assert not r.exists(f"deployer:lease:{d.context.tenant_id}")


def test_a_folded_end_is_timed_when_the_stage_ended_not_when_the_next_message_arrived(
    r: redis.Redis, store: Store, env: StepEnv, step: Sleeping
) -> None:
    """The next message may wait in the queue: the folded STAGE_COMPLETED and the stage's
    duration say when the stage ended (the time the message carries), not when its begin ran;
    a time outside [the stage's start, now] (another worker's clock, a forged message) is not
    believed."""
    d, (first, second), outcome = _first_stage_ran(store, env)
    ended = outcome.ctx.scratch["previousStageEndedAtMs"]
    started = int(_task(r, d)["stageStartedAt"])
    assert started <= ended <= now_ms()
    # As if the stage had begun 10 s ago and its next message then waited 3 s in the queue:
    # the stage began 10 s before the begin below runs, and ended 3 s before it.
    started -= 10_000
    r.hset(f"deployer:task:{d.task_id}", "stageStartedAt", started)
    waited = outcome.ctx.ended_previous_stage_at(now_ms() - 3_000)
    assert store.begin_stage(waited, second).verdict == "OK"
    (completed,) = [
        e for _id, e in r.xrange(f"deployer:events:plan:{d.context.plan_id}")
        if e["type"] == "STAGE_COMPLETED" and e["taskId"] == d.task_id
    ]  # fmt: skip
    said = waited.scratch["previousStageEndedAtMs"]
    assert int(completed["ts"]) == said
    stats = r.hgetall("deployer:stats")
    assert int(stats[f"sds|{first.name}"]) == said - started  # the duration's sum, ms

    # A time before the stage began, or in the future, is replaced by the begin's own clock.
    d2, (first2, second2) = _dispatched(store)
    out2 = executor.run_stage(store, env, d2.context, first2)
    assert isinstance(out2, executor.Proceed)
    before = now_ms()
    assert (
        store.begin_stage(out2.ctx.ended_previous_stage_at(before + 3_600_000), second2).verdict
        == "OK"
    )
    (completed2,) = [
        e for _id, e in r.xrange(f"deployer:events:plan:{d2.context.plan_id}")
        if e["type"] == "STAGE_COMPLETED" and e["taskId"] == d2.task_id
    ]  # fmt: skip
    assert before <= int(completed2["ts"]) <= now_ms()
