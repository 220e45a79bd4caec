"""Chains of stage tasks: built by a pure function, sent by another."""

from __future__ import annotations

from celery import chain
from celery.canvas import Signature

from celeryconfig import STAGES_QUEUE
from deployer.models import StageSpec, TaskRuntimeContext
from deployer.store import Dispatch
from tasks.app import app

RUN_STAGE = "deployer.run_stage"


def stage_label(stage: StageSpec, ctx: TaskRuntimeContext) -> str:
    """What Flower shows for a stage task instead of `deployer.run_stage`."""
    return f"stage {stage.name} · {ctx.tenant_id}"


def build_chain(stages: list[StageSpec], ctx: TaskRuntimeContext) -> Signature:
    """run_stage(ctx, spec_i) | run_stage(spec_i+1) | ... from ctx.stage_index on.

    Each stage returns the updated context, which Celery prepends to the next stage's
    arguments: the TaskRuntimeContext is the chain's state.
    """
    sigs = []
    for i in range(ctx.stage_index, len(stages)):
        spec = stages[i].model_dump(mode="json", by_alias=True)
        args = (
            (ctx.model_dump(mode="json", by_alias=True), spec) if i == ctx.stage_index else (spec,)
        )
        sigs.append(
            app.signature(
                RUN_STAGE, args=args, queue=STAGES_QUEUE, shadow=stage_label(stages[i], ctx)
            )
        )
    return chain(*sigs)


def send_dispatches(dispatches: list[Dispatch]) -> None:
    """Send every dispatched task's chain over one pooled producer connection."""
    with app.producer_or_acquire() as producer:
        for d in dispatches:
            build_chain(d.run.stages, d.context).apply_async(producer=producer)
