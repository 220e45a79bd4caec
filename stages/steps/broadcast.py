"""Broadcast: a nudge on the pub/sub topic; the HealthCheck poll remains the truth."""

from __future__ import annotations

import json
import time

from deployer.models import StepSpec, TaskRuntimeContext
from stages.base import Done, Step, StepEnv, StepResult


class Broadcast(Step):
    type_name = "broadcast"

    def run(self, step: StepSpec, ctx: TaskRuntimeContext, env: StepEnv) -> StepResult:
        env.target.publish(env.settings.pubsub_topic, self.message(step, ctx))
        return Done()

    @staticmethod
    def message(step: StepSpec, ctx: TaskRuntimeContext) -> str:
        """The broadcast's JSON text (docs/contracts.md §2), timestamped now."""
        message = {
            "tenantId": ctx.tenant_id,
            "appName": step.params["appName"],
            "version": ctx.plan_version,
            "timestamp": int(time.time() * 1000),
        }
        return json.dumps(message, separators=(",", ":"))
