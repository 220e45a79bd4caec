"""RedisAck: write the service field + metadata, publish the nudge, verify, as one step.

The write and the publish reuse KeyValueWrite and Broadcast (same parameters, same fenced
script, which also publishes the broadcast once the write landed: one round trip) and happen
once per run of the step; later attempts only poll (HealthCheck).
"""

from __future__ import annotations

from deployer.models import StepSpec, TaskRuntimeContext
from stages.base import Step, StepEnv, StepResult, Wait
from stages.steps.broadcast import Broadcast
from stages.steps.health_check import HealthCheck
from stages.steps.key_value_write import KeyValueWrite


class RedisAck(Step):
    type_name = "redis-ack"
    calls_instances = True

    def __init__(self) -> None:
        self.write, self.publish, self.verify = KeyValueWrite(), Broadcast(), HealthCheck()

    def run(self, step: StepSpec, ctx: TaskRuntimeContext, env: StepEnv) -> StepResult:
        if not ctx.scratch.get("written"):
            # Write and broadcast in one round trip: the script publishes once the fenced
            # write landed (a refused write raises StaleRun and publishes nothing, as before).
            announce = (env.settings.pubsub_topic, self.publish.message(step, ctx))
            self.write.write(step, ctx, env, announce)
        result = self.verify.check(step.params, ctx, env)
        if isinstance(result, Wait):
            result.progress["written"] = True
        return result
