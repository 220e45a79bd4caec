"""Broadcast: a nudge on the pub/sub topic; the HealthCheck poll remains the truth."""

from __future__ import annotations

import json
import time

from deployer.models import StepSpec, TaskRuntimeContext
from stages.base import Done, Step, StepEnv, StepResult


class Broadcast(Step):
    type_name = "broadcast"

    def run(self, step: StepSpec, ctx: TaskRuntimeContext, env: StepEnv) -> StepResult:
        message = {
            "tenantId": ctx.tenant_id,
            "appName": step.params["appName"],
            "version": ctx.plan_version,
            "timestamp": int(time.time() * 1000),
        }
        env.target.publish(env.settings.pubsub_topic, json.dumps(message, separators=(",", ":")))
        return Done()
