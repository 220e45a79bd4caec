"""Chains of stage tasks: built by a pure function, sent by another."""

from __future__ import annotations

from celery import chain
from celery.canvas import Signature

from celeryconfig import STAGES_QUEUE
from deployer import tracing
from deployer.context import TaskRuntimeContext
from deployer.models import StageSpec
from deployer.state.store import Dispatch
from tasks.app import app

RUN_STAGE = "deployer.run_stage"


def stage_label(stage: StageSpec, ctx: TaskRuntimeContext) -> str:
    """What Flower shows for a stage task instead of `deployer.run_stage`."""
    return f"stage {stage.name} · {ctx.tenant_id}"


#: kombu's Redis transport keeps one list per priority step (0, 3, 6, 9) and serves 0 first.
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "sentinel://")


def stage_priority(index: int) -> int | None:
    """Later stages first: a tenant's next stage overtakes other tenants' first stages, so a
    burst finishes tenants one after another instead of all at the very end (one FIFO queue).

    Redis only (0 is served first there); RabbitMQ would need `x-max-priority` queue
    arguments, which the public queues must not have, so messages there carry none.
    """
    if not str(app.conf.broker_url or "").startswith(_REDIS_SCHEMES):
        return None
    return max(0, 9 - 3 * index)


def build_chain(stages: list[StageSpec], ctx: TaskRuntimeContext) -> Signature:
    """run_stage(ctx, spec_i) | run_stage(spec_i+1) | ... from ctx.stage_index on.

    Each stage returns the updated context, which Celery prepends to the next stage's
    arguments: the TaskRuntimeContext is the chain's state.
    """
    sigs = []
    for i in range(ctx.stage_index, len(stages)):
        spec = stages[i].model_dump(mode="json", by_alias=True)
        args = (ctx.to_wire(), spec) if i == ctx.stage_index else (spec,)
        options: dict[str, object] = {"queue": STAGES_QUEUE, "shadow": stage_label(stages[i], ctx)}
        priority = stage_priority(i)
        if priority is not None:
            options["priority"] = priority
        sigs.append(app.signature(RUN_STAGE, args=args, **options))
    return chain(*sigs)


#: Messages per pipeline round trip when a wave is sent (kombu's publish batch).
SEND_BATCH = 500


def send_dispatches(dispatches: list[Dispatch]) -> list[tuple[Dispatch, str]]:
    """Send every dispatched task's chain over one pooled producer, in batches.

    The first stage is published with the rest of the chain in its `chain` option (what
    `chain.apply_async` does, protocol 2). `chain.apply_async` itself is not used: it drops
    the `producer` argument (celery/canvas.py `_chain.run`), so a producer held here while
    each send took another deadlocked the pool under concurrent submits, and acquiring one
    per chain doubled the cost of sending a plan's first wave.

    On Redis, kombu's `Producer.batch` (5.7) sends the LPUSHes of up to SEND_BATCH messages
    in one pipeline over one client, instead of a round trip and a new client object per
    message. Other transports (RabbitMQ, or Redis with retry-on-timeout) publish at once.
    A failed flush raises: the tasks already hold their slots and are re-driven by the
    reconciler after `pending_grace_seconds`.

    Returns the dispatches whose chain could not be built, with the reason: one task's bad
    record (a context past its run's last stage) fails that task, never the batch.
    """
    unsent: list[tuple[Dispatch, str]] = []
    with app.producer_or_acquire() as producer, producer.batch(max_size=SEND_BATCH):
        for d in dispatches:
            try:
                first, *rest = build_chain(d.run.stages, d.context).tasks
            except Exception as exc:  # reported per task to the caller, which fails it
                unsent.append((d, f"cannot build its chain: {exc!r}"))
                continue
            with tracing.run_context(d.context):  # the publish joins the run's trace
                first.apply_async(producer=producer, chain=list(reversed(rest)) or None)
    return unsent
