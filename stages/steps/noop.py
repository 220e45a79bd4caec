"""Noop: a step that does nothing, so benchmarks can measure pure orchestration cost."""

from __future__ import annotations

from deployer.models import StepSpec, TaskRuntimeContext
from stages.base import Done, Step, StepEnv, StepResult


class Noop(Step):
    type_name = "noop"

    def run(self, step: StepSpec, ctx: TaskRuntimeContext, env: StepEnv) -> StepResult:
        return Done()
