"""RedisAck: write the service field + metadata, publish the nudge, verify, as one step.

The write and the publish reuse KeyValueWrite and Broadcast (same parameters, same fenced
script, which also publishes the broadcast once the write landed: one round trip) and happen
once per run of the step; later attempts only poll (HealthCheck).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from deployer.context import TaskRuntimeContext
from deployer.models import StepSpec
from stages.base import StepEnv
from stages.steps.broadcast import Broadcast, BroadcastParams
from stages.steps.health_check import HealthCheck, HealthCheckParams
from stages.steps.key_value_write import KeyValueWrite, KeyValueWriteParams
from stages.types import Step, StepResult, Wait


class RedisAckParams(KeyValueWriteParams, BroadcastParams, HealthCheckParams):
    """Those of key-value-write, broadcast and health-check together."""


class RedisAck(Step[RedisAckParams]):
    type_name = "redis-ack"
    Params = RedisAckParams
    calls_instances = True

    def __init__(self) -> None:
        self.write, self.publish, self.verify = KeyValueWrite(), Broadcast(), HealthCheck()

    def writes(self, step: StepSpec) -> dict[str, Any]:
        p = self.parse(step)
        return {p.field: p.value}

    def deleting(self, step: StepSpec, fields: Sequence[str]) -> StepSpec | None:
        return self.write.deleting(step, fields)

    def run(self, step: StepSpec, ctx: TaskRuntimeContext, env: StepEnv) -> StepResult:
        p = self.parse(step)
        if not ctx.scratch.get("written"):
            # Write and broadcast in one round trip: the script publishes once the fenced
            # write landed (a refused write raises StaleRun and publishes nothing, as before).
            announce = (env.settings.pubsub_topic, self.publish.message(p, ctx))
            self.write.write(p, ctx, env, announce)
        result = self.verify.check(p, ctx, env)
        if isinstance(result, Wait):
            result.progress["written"] = True
        return result
