"""KeyValueWrite: the service field and `metadata` in one atomic, fenced round trip.

The hash contract it keeps is docs/contracts.md §2.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import redis
from redis.commands.core import Script

from deployer import keys
from deployer.errors import StaleRun
from deployer.models import StepSpec, TaskRuntimeContext
from stages.base import Done, Step, StepEnv, StepResult

_SCRIPT = resources.files("deployer").joinpath("lua/kv_write.lua").read_text()


@lru_cache(maxsize=8)
def _script_for(client: redis.Redis) -> Script:
    return client.register_script(_SCRIPT)


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class KeyValueWrite(Step):
    type_name = "key-value-write"

    def run(self, step: StepSpec, ctx: TaskRuntimeContext, env: StepEnv) -> StepResult:
        return self.write(step, ctx, env)

    def write(
        self,
        step: StepSpec,
        ctx: TaskRuntimeContext,
        env: StepEnv,
        announce: tuple[str, str] | None = None,
    ) -> StepResult:
        """The fenced write; with `announce` (channel, message), also its broadcast, published
        by the same script once the write landed: one round trip instead of two (RedisAck)."""
        field = str(step.params["field"])
        value = compact(step.params["value"])
        delete = [str(f) for f in step.params.get("deleteFields", [])]
        version = ctx.plan_version
        if version is None:
            env.log.warning(
                "planVersion missing for tenant %s (task %s): writing %s without metadata",
                ctx.tenant_id,
                ctx.task_id,
                field,
            )
            metadata = ""
        else:
            metadata = compact({"version": version})
        script = _script_for(env.target)
        verdict = script(
            keys=[
                keys.config_hash(env.settings.key_prefix, ctx.tenant_id),
                env.fence_key(ctx.tenant_id),
            ],
            args=[ctx.token, field, value, metadata, len(delete), *delete, *(announce or ())],
        )
        if verdict != "OK":
            raise StaleRun(f"run {ctx.run_id} no longer owns tenant {ctx.tenant_id}; write refused")
        return Done()
