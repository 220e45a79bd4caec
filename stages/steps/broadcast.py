"""Broadcast: a nudge on the pub/sub topic; the HealthCheck poll remains the truth."""

from __future__ import annotations

import json
import time

from deployer.context import TaskRuntimeContext
from deployer.models import StepSpec
from stages.base import StepEnv
from stages.types import Done, Step, StepParams, StepResult


class BroadcastParams(StepParams):
    #: The `appName` of the nudge (the service field that changed).
    app_name: str


class Broadcast(Step[BroadcastParams]):
    type_name = "broadcast"
    Params = BroadcastParams

    def run(self, step: StepSpec, ctx: TaskRuntimeContext, env: StepEnv) -> StepResult:
        return self.send(self.parse(step), ctx, env)

    def send(self, p: BroadcastParams, ctx: TaskRuntimeContext, env: StepEnv) -> StepResult:
        env.target.publish(env.settings.pubsub_topic, self.message(p, ctx))
        return Done()

    @staticmethod
    def message(p: BroadcastParams, ctx: TaskRuntimeContext) -> str:
        """The broadcast's JSON text (docs/contracts.md §2), timestamped now."""
        message = {
            "tenantId": ctx.tenant_id,
            "appName": p.app_name,
            "version": ctx.plan_version,
            "timestamp": int(time.time() * 1000),
        }
        return json.dumps(message, separators=(",", ":"))
