"""deployer.run_stage: one stage of one tenant's chain."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Task
from kombu.utils import json as kombu_json
from pydantic import ValidationError

from deployer import executor
from deployer.context import TaskRuntimeContext
from deployer.errors import StageFailed
from deployer.models import StageSpec
from deployer.parking import Resend
from tasks import runtime, tokens  # noqa: F401 - tokens: the log filter
from tasks.app import app
from tasks.attempts import resent

log = logging.getLogger("deployer.tasks")

#: Backing off while Redis is unreachable: the stage is re-sent, not lost.
REDIS_DOWN_COUNTDOWN = 2.0


def stop_chain(task: Task) -> None:
    """End the chain after this task.

    `request.chain = None` is not a documented Celery API (docs/contracts.md §7.2); it lives
    here alone, with its own test (tests/unit/test_stop_chain.py), so an upgrade that breaks
    it fails loudly.
    """
    task.request.chain = None


def reschedule(task: Task, args: tuple[Any, ...], countdown: float) -> None:
    """Re-send this stage, with the rest of its chain, after `countdown` seconds.

    `retry(throw=False)` sends the same message `raise self.retry(...)` would (chain and
    retry count included) without raising: a raised Retry makes Celery build an
    ExceptionInfo that copies every traceback frame's code positions (billiard, Python
    3.11+), ~100 KB per poll that piled up to 0.9 GB in a pool process supervising 10,000
    waiting tenants. The attempt then returns normally, so the chain is stopped here, and
    it returns `resent(...)` so that its event is a `task-waiting` (tasks/attempts.py).
    """
    # A step plugin's longer wait would be refused by the guard's ETA horizon: poll sooner.
    countdown = min(countdown, runtime.settings().eta_horizon_seconds)
    task.retry(args=args, countdown=countdown, throw=False)
    stop_chain(task)


def park(task: Task, args: tuple[Any, ...], outcome: executor.Reschedule) -> str | None:
    """Park the stage's re-send in Redis until due or woken by an ack (deployer/parking.py),
    instead of a countdown message: what Redis keeps can be woken, a held message cannot.

    The parked signature is what `retry` would send (`signature_from_request`: same task id,
    the rest of the chain in its `chain` option, retries + 1); the worker's parking thread
    sends it. Returns what the attempt did, or None when Redis failed (the caller re-sends
    with a countdown instead: the stage is never lost)."""
    assert outcome.wake is not None
    ctx = outcome.ctx
    sig = task.signature_from_request(task.request, args, None, retries=task.request.retries + 1)
    position = f"{ctx.token}:{ctx.stage_index}:{ctx.step_index}:{ctx.attempt}"
    resend = Resend(
        task_id=ctx.task_id,
        tenant_id=ctx.tenant_id,
        token=ctx.token,
        position=position,
        wake=outcome.wake,
        sig=kombu_json.dumps(dict(sig)),
    )
    try:
        verdict = runtime.parking().park(resend, outcome.countdown)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        log.warning("run_stage %s: could not park (%s); re-sending", ctx.task_id, exc)
        return None
    if verdict == "NOW":  # an instance acked while this poll ran: poll again at once
        reschedule(task, args, 0.0)
        return resent(f"{outcome.why or 'waiting'}; acked meanwhile, stage re-sent at once")
    stop_chain(task)
    if verdict == "STALE":
        return HALTED["stale"]
    return resent(
        f"{outcome.why or 'waiting'}; stage parked, polled again in {outcome.countdown:g}s "
        f"or when an instance acks (attempt {ctx.attempt})"
    )


@app.task(
    name="deployer.run_stage",
    bind=True,
    max_retries=None,  # polls re-schedule through retry(); we count attempts ourselves
    acks_late=True,
    # A stage that failed its task raises StageFailed: acked (never redelivered), never
    # retried (no autoretry_for), logged on one INFO line without a traceback (throws).
    acks_on_failure_or_timeout=True,
    throws=(StageFailed,),
    Request="tasks.attempts:StageRequest",  # events: re-sends WAITING, no token
    ignore_result=True,
)
def run_stage(self: Task, ctx: Any, spec: Any) -> dict[str, Any] | str:
    """Returns the context for the next stage, or (chain stopped) what happened, in words:
    that is what Flower's Result column and the worker's log show for the attempt. An
    attempt that re-sent its stage is WAITING in Flower, one that failed its task a FAILURE
    (StageFailed), any other a SUCCESS."""
    try:
        context = TaskRuntimeContext.from_wire(ctx)
        stage = StageSpec.model_validate(spec)
    except ValidationError as exc:
        log.error("run_stage: malformed arguments dropped: %s", exc.errors(include_input=False)[:3])
        stop_chain(self)
        return "malformed arguments: dropped"
    try:
        outcome = executor.run_stage(
            runtime.store(), runtime.step_env(), context, stage, self.request.hostname or ""
        )
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        log.warning("run_stage %s: redis unavailable (%s); re-sending", context.task_id, exc)
        reschedule(self, (ctx, spec), REDIS_DOWN_COUNTDOWN)
        return resent(f"redis unavailable: stage re-sent, again in {REDIS_DOWN_COUNTDOWN:g}s")
    if isinstance(outcome, executor.Proceed):
        return outcome.ctx.to_wire()
    if isinstance(outcome, executor.Reschedule):
        args = (outcome.ctx.to_wire(), spec)
        if outcome.wake is not None:
            parked = park(self, args, outcome)
            if parked is not None:
                return parked
        reschedule(self, args, outcome.countdown)
        return resent(waiting_summary(outcome))
    stop_chain(self)
    if outcome.plan_slot_freed:
        runtime.planner().dispatch(context.plan_id)
    if outcome.why in FAILING:
        # The task is FAILED and stored; the attempt says so to Celery (task-failed event).
        raise StageFailed(f"{HALTED[outcome.why]}: {outcome.reason}")
    return HALTED[outcome.why]


#: Halts that failed the task: the Celery attempt ends as a FAILURE.
FAILING = frozenset({"failed", "redelivered"})


#: What a stage attempt that ended its chain did, as Flower shows it (SUCCESS + this; the
#: FAILING ones as the text of a StageFailed).
HALTED: dict[executor.HaltReason, str] = {
    "done": "last stage done: task finished",
    "failed": "stage failed: task FAILED",
    "stale": "stale message dropped: another run owns this task now",
    "paused": "task paused before this stage",
    "cancelled": "task cancelled before this stage",
    "redelivered": "delivered too many times: task FAILED",
    "forged": "forged message dropped: its plan or tenant is not its task's",
    "superseded": "task SUPERSEDED: a newer task deployed the tenant since; not applied",
}


def waiting_summary(outcome: executor.Reschedule) -> str:
    """A poll attempt is WAITING in Flower (see `reschedule`): say that it waits, and why."""
    why = outcome.why or "waiting"
    return f"{why}; stage re-sent, again in {outcome.countdown:g}s (attempt {outcome.ctx.attempt})"
