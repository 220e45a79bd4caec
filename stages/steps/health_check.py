"""HealthCheck: every instance of a service must report the run's planVersion.

One attempt asks all not-yet-confirmed instances at once (per-request timeouts); an
unsatisfied attempt returns `Wait`, so the stage is re-sent with a countdown instead of
sleeping in the worker. Equality, not "at least": a rollback expects an older version.
Timeouts, refused connections and error statuses are "not yet" until the last attempt,
whose failure names every instance that did not converge and what it last answered.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from deployer.errors import StepFailed
from deployer.models import StepSpec, TaskRuntimeContext, is_safe_path
from stages.base import Done, Step, StepEnv, StepResult, Wait
from stages.discovery import instances_for
from stages.probe import extract, gather, request


def url_path(template: str, tenant_id: str) -> str:
    """The request path for a tenant; a path only, so a spec can never name a host."""
    path = template.replace("{tenantId}", tenant_id)
    if not is_safe_path(path):
        raise StepFailed(f"path {template!r} is not an absolute path")
    return path


def same_version(value: Any, expected: int) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value == expected
    return isinstance(value, str) and value.strip() == str(expected)


class HealthCheck(Step):
    type_name = "health-check"

    def run(self, step: StepSpec, ctx: TaskRuntimeContext, env: StepEnv) -> StepResult:
        return self.check(step.params, ctx, env)

    def check(self, params: dict[str, Any], ctx: TaskRuntimeContext, env: StepEnv) -> StepResult:
        s = env.settings
        service = str(params["service"])
        expected = ctx.plan_version
        path = url_path(str(params.get("path") or s.verify_path), ctx.tenant_id)
        json_path = str(params.get("jsonPath") or s.verify_json_path)
        scratch = ctx.scratch
        instances: list[str] = scratch.get("instances") or instances_for(
            env.discovery, service, params.get("namespace"), params.get("selection") or s.selection
        )
        started = float(scratch.get("started") or time.time())
        if expected is None and ctx.attempt == 0:
            env.log.warning(
                "planVersion missing for tenant %s (task %s): %s answers are not compared",
                ctx.tenant_id,
                ctx.task_id,
                service,
            )
        confirmed = set(scratch.get("confirmed", []))
        seen: dict[str, str] = dict(scratch.get("seen", {}))
        scheme = s.schemes.get(service, "http")
        calls = {
            inst: partial(
                request, env.http, "GET", f"{scheme}://{inst}{path}", inst, s.http_timeout_seconds
            )
            for inst in instances
            if inst not in confirmed
        }
        for inst, answer in gather(calls).items():
            value = extract(answer.body, json_path) if answer.ok else None
            seen[inst] = answer.describe(value, json_path)
            if answer.ok and (expected is None or same_version(value, expected)):
                confirmed.add(inst)
        target = f"v{expected}" if expected is not None else "up"
        summary = f"{len(confirmed)}/{len(instances)} {service} instances at {target}"
        if len(confirmed) == len(instances):
            env.log.info("tenant %s: %s", ctx.tenant_id, summary)
            return Done()
        attempt = ctx.attempt + 1
        if attempt >= s.verify_max_attempts:
            late = "; ".join(f"{i} answered {seen[i]}" for i in instances if i not in confirmed)
            raise StepFailed(
                f"{len(instances) - len(confirmed)} of {len(instances)} {service} instances "
                f"did not report {'version ' + str(expected) if expected is not None else 'up'} "
                f"at {path} after {attempt} attempts ({time.time() - started:.1f}s): {late}"
            )
        countdown = min(s.verify_interval_seconds, s.verify_first_interval_seconds * 2**ctx.attempt)
        return Wait(
            countdown,
            {
                "progress": summary,
                "instances": instances,
                "confirmed": sorted(confirmed),
                "seen": seen,
                "started": started,
            },
        )
