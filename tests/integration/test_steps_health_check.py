"""HealthCheck against the real fleet: poll every instance, wait without sleeping, fail by name."""

from __future__ import annotations

import logging
import socket

import pytest

from deployer.errors import StepFailed
from deployer.fleet import Behaviour
from stages.base import Done, Wait
from tests.helpers import unique
from tests.stepkit import announce, ctx_for, drive, env_for, once, prime, set_version, step_spec

VERIFY = step_spec("health-check", service="blue-green-gateway")


def test_a_health_check_converges_after_two_polls(session_fleet, r):
    tenant = unique("hc2")
    session_fleet.behave(tenant, Behaviour(after_polls=2))
    env = env_for(session_fleet)
    set_version(r, tenant, 20)
    ctx = ctx_for(env, tenant, 20)
    first, second = drive(VERIFY, ctx, env)
    assert isinstance(first, Wait) and isinstance(second, Done)
    assert first.countdown == min(
        env.settings.verify_interval_seconds, env.settings.verify_first_interval_seconds
    )
    assert first.progress["progress"] == "0/2 blue-green-gateway instances at v20"
    assert set(first.progress["seen"].values()) == {"no $.version in reply"}


def test_a_health_check_that_never_converges_fails_naming_each_instance(session_fleet, r):
    tenant = unique("hcnever")
    prime(session_fleet, r, tenant, 19)
    session_fleet.behave(tenant, Behaviour(never=True))
    announce(session_fleet, r, tenant, 20)
    env = env_for(session_fleet, verify_max_attempts=3)
    ctx = ctx_for(env, tenant, 20)
    assert isinstance(once(VERIFY, ctx, env), Wait)
    assert isinstance(once(VERIFY, ctx, env), Wait)
    with pytest.raises(StepFailed) as failed:
        once(VERIFY, ctx, env)
    message = str(failed.value)
    assert "2 of 2 blue-green-gateway instances did not report version 20" in message
    assert "after 3 attempts" in message
    for address in session_fleet.addresses["blue-green-gateway"]:
        assert f"{address} answered version 19" in message


def test_only_the_instances_that_have_not_confirmed_are_asked_again(session_fleet, r):
    tenant = unique("hcsome")
    first, second = session_fleet.addresses["blue-green-gateway"]
    prime(session_fleet, r, tenant, 19)
    session_fleet.behave(tenant, Behaviour(only=frozenset({first})))
    announce(session_fleet, r, tenant, 20)
    env = env_for(session_fleet, verify_max_attempts=2)
    ctx = ctx_for(env, tenant, 20)
    wait = once(VERIFY, ctx, env)
    assert isinstance(wait, Wait)
    assert wait.progress["confirmed"] == [first]
    assert wait.progress["progress"] == "1/2 blue-green-gateway instances at v20"
    with pytest.raises(StepFailed, match=f"1 of 2 .*{second} answered version 19") as failed:
        once(VERIFY, ctx, env)
    assert f"{first} answered" not in str(failed.value)


def test_timeouts_errors_and_refused_connections_are_not_yet_then_named(session_fleet, r):
    tenant = unique("hcerr")
    set_version(r, tenant, 20)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    hang, fail = unique("hchang"), unique("hc500")
    for name, rule in ((hang, Behaviour(hang=True)), (fail, Behaviour(status=500))):
        session_fleet.behave(name, rule)
        set_version(r, name, 20)
    instances = {"blue-green-gateway": [*session_fleet.addresses["blue-green-gateway"], dead]}
    # No circuit breaker here: the hanging tenant shares the session fleet's instances.
    env = env_for(
        instances=instances,
        verify_max_attempts=2,
        http_timeout_seconds=0.3,
        probe_breaker_seconds=0,
    )
    reasons = {}
    for name in (tenant, hang, fail):
        ctx = ctx_for(env, name, 20)
        assert isinstance(once(VERIFY, ctx, env), Wait)
        with pytest.raises(StepFailed) as failed:
            once(VERIFY, ctx, env)
        reasons[name] = str(failed.value)
    assert reasons[tenant].startswith("1 of 3")
    assert f"{dead} answered connection refused" in reasons[tenant]
    # the hanging request runs on past the step's patience: on a loaded machine its own 0.3 s
    # timeout may not have fired yet when the last attempt reports; either way it is named
    assert "timed out after 0.3s" in reasons[hang] or "no answer within 0.25s" in reasons[hang]
    assert "HTTP 500" in reasons[fail]


def test_equality_not_at_least_a_rollback_waits_for_the_older_version(session_fleet, r):
    tenant = unique("hcback")
    prime(session_fleet, r, tenant, 21)
    session_fleet.behave(tenant, Behaviour(after_polls=2))
    announce(session_fleet, r, tenant, 19)
    env = env_for(session_fleet)
    ctx = ctx_for(env, tenant, 19)
    first, second = drive(VERIFY, ctx, env)
    assert isinstance(first, Wait) and set(first.progress["seen"].values()) == {"version 21"}
    assert isinstance(second, Done)


def test_without_a_plan_version_answers_are_not_compared_and_a_warning_says_so(
    session_fleet, r, caplog
):
    tenant = unique("hcnov")
    prime(session_fleet, r, tenant, 7)
    env = env_for(session_fleet)
    ctx = ctx_for(env, tenant, None)
    with caplog.at_level(logging.WARNING, logger="deployer.steps"):
        assert drive(VERIFY, ctx, env) == [Done()]
    assert "planVersion missing" in caplog.text


def test_a_tenant_health_path_is_asked_on_the_configured_instances(session_fleet, r):
    tenant = unique("hcpath")
    set_version(r, tenant, 20)
    env = env_for(session_fleet)
    spec = step_spec("health-check", service="blue-green-gateway", path="/status/{tenantId}")
    assert drive(spec, ctx_for(env, tenant, 20), env) == [Done()]


def test_random_selection_asks_one_instance_and_all_asks_every_one(session_fleet, r):
    env_all = env_for(session_fleet)
    env_random = env_for(session_fleet, selection="RANDOM")
    for env, expected in ((env_all, 2), (env_random, 1)):
        tenant = unique("hcsel")
        session_fleet.behave(tenant, Behaviour(after_polls=2))
        set_version(r, tenant, 20)
        ctx = ctx_for(env, tenant, 20)
        wait = once(VERIFY, ctx, env)
        assert len(wait.progress["instances"]) == expected
        assert session_fleet.stats(tenant)["polls"] == expected
        # A RANDOM pick is kept for the whole step: the same instance is asked again.
        assert isinstance(once(VERIFY, ctx, env), Done)
        assert session_fleet.stats(tenant)["polls"] == 2 * expected


def test_the_first_polls_come_sooner_then_settle_at_the_interval(session_fleet, r):
    """Most instances converge about a second after the broadcast: ask after 1 s, then
    soon again (0.25 s, growing x1.5 up to the interval)."""
    tenant = unique("hcramp")
    prime(session_fleet, r, tenant, 19)
    session_fleet.behave(tenant, Behaviour(never=True))
    announce(session_fleet, r, tenant, 20)
    env = env_for(
        session_fleet,
        verify_interval_seconds=3,
        verify_first_interval_seconds=1,
        verify_max_attempts=10,
    )
    ctx = ctx_for(env, tenant, 20)
    countdowns = [once(VERIFY, ctx, env).countdown for _ in range(9)]  # type: ignore[union-attr]
    assert countdowns == [1, 0.25, 0.375, 0.5625, 0.84375, 1.265625, 1.8984375, 2.84765625, 3]


def test_quicker_first_polls_do_not_shorten_the_time_a_health_check_waits(session_fleet, r):
    """It gives up after (max attempts - 1) x interval seconds of countdowns, as a flat
    schedule would: here 2 x 1 s, reached by 0.25 + 0.25 + 0.375 + 0.5625 + 0.84375 s."""
    tenant = unique("hcpatience")
    prime(session_fleet, r, tenant, 19)
    session_fleet.behave(tenant, Behaviour(never=True))
    announce(session_fleet, r, tenant, 20)
    env = env_for(session_fleet, verify_interval_seconds=1, verify_first_interval_seconds=0.25,
                  verify_max_attempts=3)  # fmt: skip
    ctx = ctx_for(env, tenant, 20)
    for _ in range(5):
        assert isinstance(once(VERIFY, ctx, env), Wait)
    with pytest.raises(StepFailed, match="after 6 attempts"):
        once(VERIFY, ctx, env)
