"""KeyValueWrite: the service field and `metadata` in one atomic, fenced round trip.

The hash contract it keeps is docs/contracts.md §2.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from deployer.context import TaskRuntimeContext
from deployer.errors import StaleRun
from deployer.models import StepSpec
from deployer.state import targets
from deployer.state.targets import WriteVerdict
from stages.base import StepEnv
from stages.types import Done, Step, StepParams, StepResult


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class KeyValueWriteParams(StepParams):
    #: The service field of the tenant's hash.
    field: str
    #: Its value (any JSON; stored compact).
    value: Any
    #: Fields deleted in the same script (a rollback's: those the newer run wrote only).
    delete_fields: list[str] = []


class KeyValueWrite(Step[KeyValueWriteParams]):
    type_name = "key-value-write"
    Params = KeyValueWriteParams

    def run(self, step: StepSpec, ctx: TaskRuntimeContext, env: StepEnv) -> StepResult:
        return self.write(self.parse(step), ctx, env)

    def writes(self, step: StepSpec) -> dict[str, Any]:
        p = self.parse(step)
        return {p.field: p.value}

    def deleting(self, step: StepSpec, fields: Sequence[str]) -> StepSpec | None:
        return step.model_copy(update={"params": {**step.params, "deleteFields": list(fields)}})

    def write(
        self,
        p: KeyValueWriteParams,
        ctx: TaskRuntimeContext,
        env: StepEnv,
        announce: tuple[str, str] | None = None,
    ) -> StepResult:
        """The fenced write; with `announce` (channel, message), also its broadcast, published
        by the same script once the write landed: one round trip instead of two (RedisAck)."""
        field = p.field
        value = compact(p.value)
        delete = p.delete_fields
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
        verdict = targets.write_config(
            env.target,
            targets.config_hash(env.settings.key_prefix, ctx.tenant_id),
            env.fence_key(ctx.tenant_id),
            ctx.token,
            field,
            value,
            metadata,
            delete,
            announce,
        )
        if verdict is WriteVerdict.STALE:
            raise StaleRun(f"run {ctx.run_id} no longer owns tenant {ctx.tenant_id}; write refused")
        return Done()
