"""Noop: a step that does nothing, so benchmarks can measure pure orchestration cost."""

from __future__ import annotations

from deployer.context import TaskRuntimeContext
from deployer.models import StepSpec
from stages.base import StepEnv
from stages.types import Done, Step, StepParams, StepResult


class NoopParams(StepParams):
    """None."""


class Noop(Step[NoopParams]):
    type_name = "noop"
    Params = NoopParams

    def run(self, step: StepSpec, ctx: TaskRuntimeContext, env: StepEnv) -> StepResult:
        return Done()
