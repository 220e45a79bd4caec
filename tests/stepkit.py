"""Running one step against real Redis and real HTTP, as the executor would.

`drive` applies the executor's contract for `Wait` (attempt + 1, progress merged into
scratch) without the countdown: the countdown only paces polls, and the fleet's
`after_polls` makes convergence depend on polls, not on time.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import redis

from deployer.context import TaskRuntimeContext
from deployer.fleet import Fleet
from deployer.models import StepSpec, task_id_for
from deployer.settings import Settings
from deployer.state.targets import config_hash
from stages import registry
from stages.base import Done, StepEnv, StepResult, Wait
from tests.helpers import wait_for

PREFIX = Settings().key_prefix


_made: list[StepEnv] = []


def env_for(fleet: Fleet | None = None, **overrides: Any) -> StepEnv:
    """A StepEnv of its own; `close_envs` (run after every test) closes its connections."""
    if fleet is not None:
        overrides.setdefault("instances", fleet.addresses)
    settings = Settings(**overrides)
    env = StepEnv(
        settings=settings,
        target=redis.Redis.from_url(os.environ["DEPLOYER_TARGET_REDIS_URL"], decode_responses=True),
    )
    _made.append(env)
    return env


def close_envs() -> None:
    """Close the Redis and HTTP connections of every env made since the last call."""
    while _made:
        env = _made.pop()
        env.target.close()
        if "http" in env.__dict__:  # the client is created on first use
            env.http.close()


@dataclass
class Attempts:
    """A run's (frozen) context across the attempts of one step: `once` replaces it with
    the context the executor would hand the next attempt."""

    ctx: TaskRuntimeContext


def ctx_for(env: StepEnv, tenant: str, version: int | None = 20) -> Attempts:
    """A run context that owns the tenant (its token is in the fence key)."""
    token = f"tok-{tenant}"
    env.target.set(env.fence_key(tenant), token)
    return Attempts(
        TaskRuntimeContext(
            plan_id="p",
            task_id=task_id_for("p", tenant),
            tenant_id=tenant,
            run_id="r1",
            token=token,
            additional_data={"planVersion": version},
        )
    )


def step_spec(type_name: str, **params: Any) -> StepSpec:
    return StepSpec(type=type_name, name=f"test-{type_name}", params=params)


def once(spec: StepSpec, run: Attempts, env: StepEnv) -> StepResult:
    """One attempt of the step; on Wait, `run` moves on to the next attempt's context."""
    result = registry.step(spec.type).run(spec, run.ctx, env)
    if isinstance(result, Wait):
        run.ctx = run.ctx.after_wait(result.progress)
    return result


def drive(spec: StepSpec, run: Attempts, env: StepEnv, rounds: int = 50) -> list[Any]:
    """Run until Done (or an exception); returns the results of every attempt."""
    results: list[Any] = []
    for _ in range(rounds):
        results.append(once(spec, run, env))
        if isinstance(results[-1], Done):
            return results
    raise AssertionError(f"step still waiting after {rounds} attempts: {results[-1]}")


def set_version(r: redis.Redis, tenant: str, version: int, field: str = "icc-bg-gateway") -> None:
    r.hset(
        config_hash(PREFIX, tenant),
        mapping={
            field: json.dumps({"tenantId": tenant}),
            "metadata": json.dumps({"version": version}),
        },
    )


def announce(fleet: Fleet, r: redis.Redis, tenant: str, version: int) -> None:
    """Write `version` and broadcast it; returns once every bg instance has re-read it."""
    set_version(r, tenant, version)
    bg = fleet.addresses["blue-green-gateway"]
    before = {a: fleet.broadcasts(tenant, a) for a in bg}
    message = {"tenantId": tenant, "appName": "icc-bg-gateway", "version": version}
    r.publish(Settings().pubsub_topic, json.dumps(message))
    wait_for(
        lambda: all(fleet.broadcasts(tenant, a) > before[a] for a in bg),
        timeout=5,
        what="broadcast received by every bg instance",
    )


def prime(fleet: Fleet, r: redis.Redis, tenant: str, version: int) -> None:
    """Every instance has loaded `version` (as if it had been running with it)."""
    set_version(r, tenant, version)
    for inst in fleet.instances:
        if inst.service == "blue-green-gateway":
            inst.refresh(tenant)
            assert inst.version_of(tenant)[0] == version
