"""Runs one stage of a chain: gate, steps, checkpoint. Knows nothing of Celery.

The stage task asks `run_stage` what to do and translates the answer: `Proceed` returns the
context to the next stage, `Reschedule` re-sends this stage with a countdown (a waiting
step never sleeps in a worker), `Halt` ends the chain here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import redis

from deployer.errors import StaleRun
from deployer.models import StageSpec, TaskRuntimeContext
from deployer.store import StageGate, Store
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


def reraise_transient(exc: Exception) -> None:
    """A lost Redis connection is not the step's fault: the stage task re-sends itself."""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        raise exc


def run_stage(
    store: Store, env: StepEnv, ctx: TaskRuntimeContext, stage: StageSpec, worker: str = ""
) -> Outcome:
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
            result = registry.step(spec.type).run(spec, ctx, env)
        except StaleRun as exc:
            log.warning("task %s: %s", ctx.task_id, exc)
            return Halt("stale")
        except Exception as exc:  # a step's failure is the task's, never the worker's
            reraise_transient(exc)
            reason = f"stage {stage.name}, step {spec.name}: {exc}"
            log.warning("task %s failed: %s", ctx.task_id, reason)
            if store.fail(ctx, stage.name, reason) in ("STALE", "FORGED"):
                return Halt("stale")  # another run owns the task now: not ours to fail
            return Halt("failed", plan_slot_freed=True, reason=reason)
        if isinstance(result, Wait):
            ctx = ctx.after_wait(result.progress)
            why = str(result.progress.get("progress") or f"step {spec.name} not done yet")
            return Reschedule(ctx, result.countdown, why)
        if i < last:
            ctx = ctx.next_step()  # (after the last one: next_stage)

    ctx = ctx.next_stage()
    is_last = ctx.stage_index >= ctx.stage_count
    if not is_last:
        ctx.encode_for_next_stage()  # the checkpoint below is serialised from it
    verdict, waiting = store.end_stage(ctx, stage, is_last)
    if verdict in ("STALE", "FORGED"):
        return Halt("stale")
    if is_last:
        # Every path that queues a task (create, resume, retry, rollback) dispatches itself,
        # so an empty queue here means nobody waits for this slot.
        return Halt("done", plan_slot_freed=waiting > 0)
    return Proceed(ctx)


def _refused(
    store: Store, ctx: TaskRuntimeContext, stage: StageSpec, gate: StageGate
) -> Outcome | None:
    """What the start-of-stage gate decided when it did not let the stage run, else None."""
    if gate.verdict == "FORGED":
        log.warning(
            "task %s: stage %s message names plan %s tenant %s, its task is %s: dropped",
            ctx.task_id,
            stage.name,
            ctx.plan_id,
            ctx.tenant_id,
            gate.detail,
        )
        return Halt("forged")
    if gate.verdict == "SUPERSEDED":
        log.warning(
            "task %s SUPERSEDED: tenant %s was deployed by newer task %s since; not applied",
            ctx.task_id,
            ctx.tenant_id,
            gate.detail,
        )
        return Halt("superseded", plan_slot_freed=True)
    if gate.verdict == "STALE":
        log.info("task %s: stale stage %s dropped (%s)", ctx.task_id, stage.name, gate.detail)
        return Halt("stale")
    if gate.verdict in ("PAUSED", "CANCELLED"):
        log.info("task %s %s before stage %s", ctx.task_id, gate.verdict.lower(), stage.name)
        return Halt("paused" if gate.verdict == "PAUSED" else "cancelled", plan_slot_freed=True)
    if gate.verdict == "BUSY":
        return Reschedule(ctx, LEASE_WAIT_SECONDS, "waiting for the tenant lease (another run)")
    if gate.verdict == "REDELIVERED":
        reason = f"stage {stage.name} delivered {gate.detail} times; giving up"
        store.fail(ctx, stage.name, reason)
        return Halt("redelivered", plan_slot_freed=True, reason=reason)
    return None


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
