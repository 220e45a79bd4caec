"""HealthCheck: every instance of a service must report the run's planVersion.

One attempt asks all not-yet-confirmed instances at once, each within a short wall-clock
deadline (`probe_timeout_seconds`; a hanging instance's circuit opens, stages/probe.py),
and waits for them at most `probe_patience_seconds`: a slower answer is "not yet" and
serves the next attempt, so a hanging instance never holds the worker process. An
unsatisfied attempt returns `Wait`, so the stage is re-sent with a countdown instead of
sleeping in the worker. Equality, not "at least": a rollback expects an older version.
Timeouts, refused connections and error statuses are "not yet" until the last attempt,
whose failure names every instance that did not converge and what it last answered.

When the instances ack (`DEPLOYER_FLEET_ACKS` or the step's `acks` param), the `Wait` names
what may wake it (`WakeOn`: service, version, the instances not yet confirmed) and the
re-poll is sparse (`ack_countdown`: at most `DEPLOYER_ACK_POLLS_PER_MINUTE` per instance per
minute, the same patience in seconds); the stage task parks it (deployer/parking.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from deployer.context import TaskRuntimeContext
from deployer.errors import StepFailed
from deployer.models import StepSpec, is_safe_path
from deployer.parking import ack_countdown
from deployer.settings import Settings
from stages.base import StepEnv
from stages.discovery import Selection, instances_for
from stages.probe import extract, poll, request
from stages.types import Done, Step, StepParams, StepResult, Wait, WakeOn


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


class HealthCheckParams(StepParams):
    #: Whose instances are polled (discovery; never a host from a config).
    service: str
    #: The health path template (`{tenantId}`); default DEPLOYER_VERIFY_PATH.
    path: str | None = None
    #: Where the version is in the answer; default DEPLOYER_VERIFY_JSON_PATH.
    json_path: str | None = None
    #: ALL or RANDOM; default DEPLOYER_SELECTION.
    selection: Selection | None = None
    #: The tenant's Nacos namespace.
    namespace: str | None = None
    #: Whether the instances ack a version (docs/contracts.md §2.1); default
    #: DEPLOYER_FLEET_ACKS.
    acks: bool | None = None


class HealthCheck(Step[HealthCheckParams]):
    type_name = "health-check"
    Params = HealthCheckParams
    calls_instances = True

    def run(self, step: StepSpec, ctx: TaskRuntimeContext, env: StepEnv) -> StepResult:
        return self.check(self.parse(step), ctx, env)

    def check(self, p: HealthCheckParams, ctx: TaskRuntimeContext, env: StepEnv) -> StepResult:
        s = env.settings
        service = p.service
        expected = ctx.plan_version
        path = url_path(p.path or s.verify_path, ctx.tenant_id)
        json_path = p.json_path or s.verify_json_path
        scratch = ctx.scratch
        instances: list[str] = scratch.get("instances") or instances_for(
            env.discovery, service, p.namespace, p.selection or s.selection
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
        timeout = min(s.probe_timeout_seconds, s.http_timeout_seconds)
        calls = {
            inst: (
                # A late answer serves only this run while it holds the tenant: another
                # run, or this one after another run deployed the tenant, needs a new read.
                f"{ctx.run_id}/{ctx.lease_epoch} {scheme}://{inst}{path}",
                partial(
                    request,
                    env.http,
                    "GET",
                    f"{scheme}://{inst}{path}",
                    inst,
                    timeout,
                    max_bytes=s.http_max_response_bytes,
                    breaker_seconds=s.probe_breaker_seconds,
                ),
            )
            for inst in instances
            if inst not in confirmed
        }
        patience = min(s.probe_patience_seconds, timeout)
        for inst, answer in poll(calls, patience).items():
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
        waited = waited_so_far(scratch)
        patience = patience_of(s)
        if waited >= patience - 1e-6:
            late = "; ".join(f"{i} answered {seen[i]}" for i in instances if i not in confirmed)
            raise StepFailed(
                f"{len(instances) - len(confirmed)} of {len(instances)} {service} instances "
                f"did not report {'version ' + str(expected) if expected is not None else 'up'} "
                f"at {path} after {attempt} attempts ({time.time() - started:.1f}s): {late}"
            )
        progress = {
            "progress": summary,
            "instances": instances,
            "confirmed": sorted(confirmed),
            "seen": seen,
            "started": started,
        }
        if not expects_acks(p, s):
            countdown = next_poll(
                s.verify_first_interval_seconds, s.verify_interval_seconds, ctx.attempt
            )
            return Wait(countdown, {**progress, "waited": waited + countdown})
        # Acks expected: a sparse background poll; an instance's ack wakes the stage sooner.
        countdown = ack_countdown(s, patience, waited)
        pending = [i for i in instances if i not in confirmed]
        return Wait(
            countdown,
            {**progress, "waited": waited, "countdown": countdown, "parkedAt": time.time()},
            wake=WakeOn(service, expected, pending),
        )


#: After the first re-poll, countdowns start here and grow x1.5 up to the interval.
RAMP_START, RAMP = 0.25, 1.5


def next_poll(first: float, interval: float, attempt: int) -> float:
    """Countdown after poll `attempt` (0-based): `first`, then 0.25 s growing x1.5.

    Instances usually converge about a second after the broadcast, so the first re-poll
    comes then; if it is a moment too early, the next ones follow closely (0.25, 0.38,
    0.56 s, ...: at most ~a third of the time waited so far) instead of 2 s later, and
    they thin out to the interval for instances that take longer."""
    if attempt == 0:
        return float(min(interval, first))
    return float(min(interval, RAMP_START * RAMP ** (attempt - 1)))


def patience_of(s: Settings) -> float:
    """Seconds of countdowns after which a HealthCheck gives up: what `verify_max_attempts`
    polls at the interval would wait, however many quicker polls the ramp added."""
    return (s.verify_max_attempts - 1) * s.verify_interval_seconds


def expects_acks(p: HealthCheckParams, s: Settings) -> bool:
    """Whether this service's instances ack (a step's `acks` param, else DEPLOYER_FLEET_ACKS)."""
    return s.fleet_acks if p.acks is None else p.acks


def waited_so_far(scratch: Mapping[str, Any]) -> float:
    """Seconds of waiting counted against the patience. A countdown counts whole (a re-poll
    delayed by a busy queue does not eat the patience); a parked wait woken early by an
    ack counts only the time it really waited, so the give-up deadline stays the same in
    seconds whatever acks came."""
    waited = float(scratch.get("waited") or 0.0)
    if "parkedAt" in scratch:
        countdown = float(scratch.get("countdown") or 0.0)
        waited += max(0.0, min(countdown, time.time() - float(scratch["parkedAt"])))
    return waited
