"""Runs one stage of a chain: gate, steps, checkpoint. Knows nothing of Celery.

The stage task asks `run_stage` what to do and translates the answer: `Proceed` returns the
context to the next stage, `Reschedule` re-sends this stage with a countdown (a waiting
step never sleeps in a worker), `Halt` ends the chain here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, assert_never

import redis

from deployer import tracing
from deployer.context import TaskRuntimeContext
from deployer.errors import Code, StaleRun, code_of
from deployer.models import StageSpec
from deployer.parking import WakeOn
from deployer.state.replies import EndVerdict, FailVerdict, Gate, StageEnd, StageGate
from stages import registry
from stages.base import StepEnv, Wait

log = logging.getLogger("deployer.executor")

#: How long a stage waits before asking again for a tenant another run holds.
LEASE_WAIT_SECONDS = 2.0


@dataclass
class Proceed:
    ctx: TaskRuntimeContext


@dataclass
class Reschedule:
    ctx: TaskRuntimeContext
    countdown: float
    #: What the stage waits for, for operators (Flower's result, the worker log).
    why: str = ""
    #: Set when acks can wake the stage: its re-send is parked (deployer/parking.py).
    wake: WakeOn | None = None


#: Why a stage ended its chain (mypy holds every `Halt(...)` to these).
HaltReason = Literal[
    "done", "failed", "stale", "paused", "cancelled", "redelivered", "forged", "superseded"
]


@dataclass
class Halt:
    why: HaltReason
    plan_slot_freed: bool = False
    #: For "failed" and "redelivered": the reason stored on the task.
    reason: str = ""


Outcome = Proceed | Reschedule | Halt


class StageStore(Protocol):
    """What a stage needs of the store: the gate at its start, the checkpoint at its end,
    and failing its task (deployer.state.store.Store; a stub in tests/unit/test_run_stage.py).

    A stage that is not the last and ran within `fold_window_seconds` leaves its end to the
    next stage's `begin_stage` (one round trip per stage instead of two)."""

    @property
    def fold_window_seconds(self) -> float: ...

    def begin_stage(
        self, ctx: TaskRuntimeContext, stage: StageSpec, worker: str = ""
    ) -> StageGate: ...

    def end_stage(self, ctx: TaskRuntimeContext, stage: StageSpec, is_last: bool) -> StageEnd: ...

    def fail(
        self, ctx: TaskRuntimeContext, stage_name: str, reason: str, code: str = Code.STEP_FAILED
    ) -> FailVerdict: ...


if TYPE_CHECKING:
    from deployer.state.store import Store

    def _store_is_a_stage_store(store: Store) -> StageStore:
        return store  # mypy holds Store to the protocol here


def reraise_transient(exc: Exception) -> None:
    """A lost Redis connection is not the step's fault: the stage task re-sends itself."""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        raise exc


def run_stage(
    store: StageStore, env: StepEnv, ctx: TaskRuntimeContext, stage: StageSpec, worker: str = ""
) -> Outcome:
    """One attempt at `stage` (a span of the run's trace when tracing is on)."""
    with tracing.span(
        f"deployer.stage {stage.name}",
        ctx,
        **{
            "deployer.stage": stage.name,
            "deployer.stage_index": ctx.stage_index,
            "deployer.step_index": ctx.step_index,
            "deployer.attempt": ctx.attempt,
            "deployer.worker": worker or None,
        },
    ) as span:
        outcome = _run_stage(store, env, ctx, stage, worker)
        if span is not None:
            _describe(span, outcome)
        return outcome


def _describe(span: object, outcome: Outcome) -> None:
    """What the attempt did, on its span."""
    if isinstance(outcome, Proceed):
        tracing.set_attributes(span, **{"deployer.outcome": "proceed"})
    elif isinstance(outcome, Reschedule):
        tracing.set_attributes(
            span,
            **{
                "deployer.outcome": "parked" if outcome.wake is not None else "wait",
                "deployer.wait_seconds": outcome.countdown,
                "deployer.progress": outcome.why,
            },
        )
    else:
        tracing.set_attributes(
            span, **{"deployer.outcome": outcome.why, "deployer.reason": outcome.reason or None}
        )


def _run_stage(
    store: StageStore, env: StepEnv, ctx: TaskRuntimeContext, stage: StageSpec, worker: str
) -> Outcome:
    began = time.monotonic()  # before the begin: never later than the lease it sets
    gate = store.begin_stage(ctx, stage, worker)
    refused = _refused(store, ctx, stage, gate)
    if refused is not None:
        return refused
    if gate.acquired:
        ctx = _retake_tenant(env, ctx, stage, gate.epoch)

    last = len(stage.steps) - 1
    for i in range(ctx.step_index, last + 1):
        spec = stage.steps[i]
        try:
            with tracing.span(
                f"deployer.step {spec.name}",
                **{"deployer.step": spec.name, "deployer.step_type": spec.type},
            ):
                result = registry.step(spec.type).run(spec, ctx, env)
        except StaleRun as exc:
            log.warning("task %s: %s", ctx.task_id, exc)
            return Halt("stale")
        except Exception as exc:  # a step's failure is the task's, never the worker's
            reraise_transient(exc)
            reason = f"stage {stage.name}, step {spec.name}: {exc}"
            log.warning("task %s failed: %s", ctx.task_id, reason)
            if _fenced(store.fail(ctx, stage.name, reason, code_of(exc, Code.STEP_FAILED))):
                return Halt("stale")  # another run owns the task now: not ours to fail
            return Halt("failed", plan_slot_freed=True, reason=reason)
        if isinstance(result, Wait):
            ctx = ctx.after_wait(result.progress)
            why = str(result.progress.get("progress") or f"step {spec.name} not done yet")
            return Reschedule(ctx, result.countdown, why, result.wake)
        if i < last:
            ctx = ctx.next_step()  # (after the last one: next_stage)

    return _end_stage(store, ctx.next_stage(), stage, time.monotonic() - began)


def _end_stage(store: StageStore, ctx: TaskRuntimeContext, stage: StageSpec, ran: float) -> Outcome:
    """Every step done: checkpoint, and hand the context to the next stage (or finish).

    A stage that is not the last and ran (this attempt, since its begin) within the fold
    window hands the context on at once: the next stage's begin records this end, and the
    lease its begin set still covers the whole TTL for the wait in the queue. Otherwise it
    ends on its own, renewing the lease for that wait (docs/reliability.md)."""
    is_last = ctx.stage_index >= ctx.stage_count
    if not is_last:
        if ran <= store.fold_window_seconds:
            folded = ctx.ended_previous_stage_at(int(time.time() * 1000))
            folded.encode_for_next_stage()  # the message is serialised from it
            return Proceed(folded)
        ctx.encode_for_next_stage()  # the message and the checkpoint are serialised from it
    end = store.end_stage(ctx, stage, is_last)
    match end.verdict:
        case EndVerdict.STALE | EndVerdict.FORGED:
            return Halt("stale")
        case EndVerdict.DONE:
            # Every path that queues a task (create, resume, retry, rollback) dispatches
            # itself, so an empty queue here means nobody waits for this slot.
            return Halt("done", plan_slot_freed=end.waiting > 0)
        case EndVerdict.OK:
            return Proceed(ctx)
        case _:
            assert_never(end.verdict)


def _fenced(verdict: FailVerdict) -> bool:
    """task_fail.lua left the task alone: another run owns it, or the message was forged."""
    match verdict:
        case FailVerdict.STALE | FailVerdict.FORGED:
            return True
        case FailVerdict.FAILED | FailVerdict.ROLLBACK_FAILED:
            return False
        case _:
            assert_never(verdict)


def _refused(
    store: StageStore, ctx: TaskRuntimeContext, stage: StageSpec, gate: StageGate
) -> Outcome | None:
    """What the start-of-stage gate decided when it did not let the stage run, else None.

    Exhaustive over `Gate` (mypy: assert_never); a verdict the script invents is refused
    where the reply is decoded (`StageGate.from_reply`), so nothing unknown runs the steps."""
    match gate.verdict:
        case Gate.OK:
            return None
        case Gate.FORGED:
            log.warning(
                "task %s: stage %s message names plan %s tenant %s, its task is %s: dropped",
                ctx.task_id,
                stage.name,
                ctx.plan_id,
                ctx.tenant_id,
                gate.detail,
            )
            return Halt("forged")
        case Gate.SUPERSEDED:
            log.warning(
                "task %s SUPERSEDED: tenant %s was deployed by newer task %s since; not applied",
                ctx.task_id,
                ctx.tenant_id,
                gate.detail,
            )
            return Halt("superseded", plan_slot_freed=True)
        case Gate.STALE:
            log.info("task %s: stale stage %s dropped (%s)", ctx.task_id, stage.name, gate.detail)
            return Halt("stale")
        case Gate.PAUSED:
            log.info("task %s paused before stage %s", ctx.task_id, stage.name)
            return Halt("paused", plan_slot_freed=True)
        case Gate.CANCELLED:
            log.info("task %s cancelled before stage %s", ctx.task_id, stage.name)
            return Halt("cancelled", plan_slot_freed=True)
        case Gate.BUSY:
            return Reschedule(ctx, LEASE_WAIT_SECONDS, "waiting for the tenant lease (another run)")
        case Gate.REDELIVERED:
            reason = f"stage {stage.name} delivered {gate.detail} times; giving up"
            store.fail(ctx, stage.name, reason, Code.REDELIVERY_LIMIT_REACHED)
            return Halt("redelivered", plan_slot_freed=True, reason=reason)
        case _:
            assert_never(gate.verdict)


def _retake_tenant(
    env: StepEnv, ctx: TaskRuntimeContext, stage: StageSpec, epoch: int
) -> TaskRuntimeContext:
    """This stage took the tenant lease (first stage, or again after losing it)."""
    if not env.same_server:
        env.target.set(env.fence_key(ctx.tenant_id), ctx.token)
    mid_stage = ctx.step_index > 0 or ctx.attempt > 0
    if mid_stage and ctx.lease_epoch and epoch != ctx.lease_epoch + 1:
        # Another run held the tenant since this one last did (after a pause, a lost
        # lease): what this stage wrote may be gone, so it starts over instead of waiting
        # for a version that is no longer there.
        log.info(
            "task %s: tenant %s was run by another task meanwhile; stage %s restarts",
            ctx.task_id,
            ctx.tenant_id,
            stage.name,
        )
        ctx = ctx.restart_stage()
    return ctx.with_lease_epoch(epoch)
