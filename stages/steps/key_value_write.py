"""KeyValueWrite: the service field and `metadata` in one atomic, fenced round trip.

The hash contract it keeps is docs/contracts.md §2.
"""

from __future__ import annotations

import json
from functools import lru_cache

import redis
from redis.commands.core import Script

from deployer import keys, scripts
from deployer.errors import StaleRun
from deployer.models import StepSpec, TaskRuntimeContext
from stages.base import Done, Step, StepEnv, StepResult


@lru_cache(maxsize=8)
def _script_for(client: redis.Redis) -> Script:
    return scripts.load(client, "kv_write")


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class KeyValueWrite(Step):
    type_name = "key-value-write"

    def run(self, step: StepSpec, ctx: TaskRuntimeContext, env: StepEnv) -> StepResult:
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
            args=[ctx.token, field, value, metadata, len(delete), *delete],
        )
        if verdict != "OK":
            raise StaleRun(f"run {ctx.run_id} no longer owns tenant {ctx.tenant_id}; write refused")
        return Done()
